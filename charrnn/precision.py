"""Which arithmetic to run in: fp32, or bf16 autocast where the hardware has it and it is faster.

bf16 is not always faster even on a CPU with AVX512-BF16: oneDNN's bf16 LSTM trains 1.74x faster than fp32
at 2 x 512 (batch 32) but 0.88x as fast at 2 x 1024 (batch 32) and 1.44x at 2 x 1024 (batch 128), measured
on an AMD EPYC (Zen 5). So training's `auto` times both on the model's own step shape before it starts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch

from charrnn.config import Precision


def has_native_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bf16 in hardware; without it, bf16 is emulated and several times slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(cpu, name, lambda: False)() for name in checks)
    return False


def uses_bf16(precision: Precision, device: torch.device) -> bool:
    """The rule without measuring (eval, and training on a GPU): auto means bf16 where the hardware has it."""
    return precision is Precision.BF16 or (precision is Precision.AUTO and has_native_bf16(device))


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def bf16_speedup(step: Callable[[bool], None], repeats: int = 3) -> float:
    """fp32 time over bf16 time of `step(bf16)`: above 1, bf16 is faster. Each runs once untimed (oneDNN builds
    its kernels for the shape, memory is first touched), then the two alternate, so that neither gets the
    machine's warm-up or a passing load alone; each time is the median of `repeats` runs."""
    for bf16 in (False, True):
        step(bf16)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for bf16 in (False, True):
            start = time.perf_counter()
            step(bf16)
            seconds[bf16].append(time.perf_counter() - start)
    return statistics.median(seconds[False]) / statistics.median(seconds[True])
