"""Where a run computes and in which arithmetic: `pick_device` and `choose_bf16`, the one meaning of `auto` for
every command (train and eval alike).

`auto` decides from facts that are the same on every run on one machine: the device, whether its hardware
multiplies bf16 natively, whether this torch build can run the cell in bf16 at all, and the model's and
batch's shapes. It never times anything: a timed trial picks differently under load, and then the same seed
gives a different run.

The CPU's shape rule comes from measurements on an AMD EPYC (Zen 5, AVX512-BF16), bench/RESULTS.md sessions 3
and 4 (the table is also in the README): oneDNN's bf16 LSTM is slower than fp32 for wide layers at small
batches and faster elsewhere, GRUs included. A CPU with AMX tiles (an Intel Xeon, session 42) trains wide
LSTMs at batches 16 to 64 1.2 to 3 times as fast in bf16 (one timing in three of 2x1536 at batch 16: 0.94), so
there bf16 always. A GPU's rule is nearly the reverse (an NVIDIA H200, session 37): at charrnn's shapes a step
waits on launch latency, not arithmetic, and autocast's casts add launches, so bf16 pays only for the widest
layers or large batches. Whatever the rule says, bf16 is used only where a check of the shapes finds its
gradients sound (`bf16_gradients_sound`: torch 2.13.0's LSTM on a CPU with AMX gets them wrong from 1,024
units). `bench/precision.py` (`--device cuda` on a GPU) prints the full table on a machine with
native bf16; re-run it before changing a rule.
"""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext

import torch

from charrnn.config import Cell, Device, ModelConfig, Precision, choice
from charrnn.errors import CharRNNError

# On a CPU without AMX, an LSTM at least this wide trains faster in fp32 unless each rank's batch reaches
# WIDE_LSTM_BF16_BATCH.
WIDE_LSTM_HIDDEN = 1024
WIDE_LSTM_BF16_BATCH = 128
# On a GPU, bf16 trains faster only from GPU_BF16_HIDDEN units, or from WIDE_LSTM_HIDDEN at WIDE_LSTM_BF16_BATCH
# rows: whole training loops on an H200 (bench/RESULTS.md, session 37) ran 2x384 and 2x768 at batch 32 1.2 to 1.6
# times as fast in fp32 (TF32 in cuDNN), 2x1024 at 32 as fast or faster, 2x1024 at 128 1.06-1.09 times as fast in
# bf16 and 2x2048 at 32 1.55-1.75 times; GRUs alike (bare steps).
GPU_BF16_HIDDEN = 2048


def pick_device(name: Device | str) -> torch.device:
    """auto: cuda, then Apple's mps, then cpu. Asking for a device this machine lacks is an error that says so."""
    name = choice(Device, name, "device")
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name is Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name is Device.CUDA and not torch.cuda.is_available():
        raise CharRNNError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    if name is Device.MPS and not mps:
        raise CharRNNError("--device mps: Apple MPS is not available on this machine; use --device cpu or auto")
    return torch.device(name.value)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which a container or taskset may narrow), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def threads_warning(threads: int | None) -> str | None:
    """A warning when --threads asks for more threads than CPUs: the extra ones only contend (a 2-core machine
    trained 10 times slower at --threads 1000)."""
    cpus = usable_cpus()
    if threads is None or threads <= cpus:
        return None
    return (f"warning: --threads {threads} is more than the {cpus} CPU{'s' if cpus > 1 else ''} this process may use; the extra threads "
            f"only slow it down (try --threads {cpus})")


def _cpu_has(feature: str) -> bool:
    """torch.cpu's probe for an instruction set (e.g. "amx_tile"); False where this torch build lacks the probe."""
    return bool(getattr(getattr(torch, "cpu", None), f"_is_{feature}_supported", lambda: False)())


def has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Xeon since Sapphire Rapids), where oneDNN runs bf16 by tile."""
    return _cpu_has("amx_tile")


def odd_width_warning(model: ModelConfig, bf16_on_cpu: bool) -> str | None:
    """A warning when a bf16 run on a CPU with AMX has a layer input of odd width: oneDNN's AMX kernels take it on a
    path 1.7 to 3.2 times slower per step (an odd --embedding or --hidden; bench/RESULTS.md, session 32).
    AVX512-BF16 without AMX runs odd widths at full speed (session 34, an AMD EPYC), so it is not warned."""
    odd = [f"--{name} {value}" for name, value in (("embedding", model.embedding), ("hidden", model.hidden)) if value % 2]
    if not (bf16_on_cpu and odd and has_amx()):
        return None
    return (f"warning: {' and '.join(odd)} {'is' if len(odd) == 1 else 'are'} odd, and bf16 trains odd widths 1.7 to 3.2 "
            "times slower on a CPU with AMX; an even size trains at full speed")


def has_native_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bf16 in hardware; without it, bf16 is emulated and several times slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return _cpu_has("avx512_bf16") or has_amx()
    return False


@functools.cache
def bf16_runs(device_type: str, cell: Cell) -> bool:
    """Whether this torch build runs a `cell` layer under bf16 autocast on the device at all: oneDNN's bf16
    LSTM needs AVX-512 on x86 (on an AVX2-only CPU it fails to build its kernel). A tiny forward and backward,
    once per process; a capability, not a timing."""
    with torch.random.fork_rng(devices=[]):  # the probe's initialisation must not shift the run's random stream
        try:
            layer = getattr(torch.nn, cell.name)(4, 4, batch_first=True).to(device_type)
            with autocast(torch.device(device_type), True):
                out, _ = layer(torch.zeros(1, 2, 4, device=device_type))
            out.float().sum().backward()
            return True
        except (RuntimeError, NotImplementedError):
            return False


@functools.cache
def bf16_gradients_sound(device_type: str, cell: Cell, input_size: int, hidden: int) -> bool:
    """Whether a `cell` layer of this shape gets the same gradients in bf16 autocast as in fp32, to bf16's rounding.
    torch 2.13.0's oneDNN LSTM on a CPU with AMX does not for 1,024 units or more fed an input no wider than the
    layer: its input gradients are wholly wrong and its weight gradients 20-25% off, while its outputs are right
    (bench/RESULTS.md, session 43; oneDNN capped below AMX gets them right). Such a run learns far slower, silently.
    A forward and backward of 2 x 8 steps in each arithmetic, once per shape and process: a fact of the build and
    the hardware, not a timing. Sound gradients differ by about 0.5%, broken ones by 20% or more."""
    device = torch.device(device_type)
    with torch.random.fork_rng(devices=[]):  # the probe's draws (all on the CPU) must not shift the run's stream
        torch.random.default_generator.manual_seed(0)  # the CPU's alone: torch.manual_seed would reseed a GPU's too
        layer = getattr(torch.nn, cell.name)(input_size, hidden, batch_first=True)
        x, upstream = torch.randn(2, 8, input_size), torch.randn(2, 8, hidden)
    layer, x, upstream = layer.to(device), x.to(device), upstream.to(device)
    gradients = []
    for bf16 in (False, True):
        layer.zero_grad()
        inputs = x.clone().requires_grad_(True)
        with autocast(device, bf16):
            out, _ = layer(inputs)
        (out.float() * upstream).sum().backward()
        gradients.append((inputs.grad, layer.weight_ih_l0.grad, layer.weight_hh_l0.grad))
    return all(float((b - a).norm() / a.norm()) < 0.05 for a, b in zip(*gradients))


def rule_prefers_bf16(cell: Cell, hidden: int, batch_size: int, *, amx: bool = False) -> bool:
    """On a CPU with native bf16: whether bf16 autocast trains this shape faster (see the module docstring). With
    AMX tiles (`amx`) all but two of 29 cells did, 2x1024 LSTMs at batch 32 1.7-2.5 times as fast, and the two
    misses were 0.92-0.94 (bench/RESULTS.md, session 42); AVX512-BF16 alone is slower at 2x1024, batch 32, on one
    AMD EPYC and faster on another (sessions 3 and 34)."""
    return amx or not (cell is Cell.LSTM and hidden >= WIDE_LSTM_HIDDEN and batch_size < WIDE_LSTM_BF16_BATCH)


def gpu_rule_prefers_bf16(hidden: int, batch_size: int) -> bool:
    """On a GPU with bf16: whether bf16 autocast trains this shape faster, any cell (see GPU_BF16_HIDDEN)."""
    return hidden >= GPU_BF16_HIDDEN or (hidden >= WIDE_LSTM_HIDDEN and batch_size >= WIDE_LSTM_BF16_BATCH)


def bf16_fault(device: torch.device, model: ModelConfig, *, backward: bool = True) -> str | None:
    """Why bf16 autocast cannot run `model` on this device (trained, or with `backward` False only run forward),
    or None where it can."""
    cell, hidden = model.cell, model.hidden
    if not bf16_runs(device.type, cell):
        return (f"this {device.type} cannot run {cell.value.upper()} layers in bf16 (oneDNN's bf16 LSTM needs "
                "AVX-512 on x86)")
    widths = sorted({model.layer_input_size(n) for n in range(model.layers)}) if backward else []
    unsound = next((width for width in widths if not bf16_gradients_sound(device.type, cell, width, hidden)), None)
    if unsound is not None:
        return (f"bf16 {cell.value.upper()} gradients are wrong on this {device.type} for a layer of {hidden} units fed "
                f"{unsound} inputs, a fault of torch {torch.__version__}'s kernel here found by a check at the start")
    return None


def choose_bf16(precision: Precision, device: torch.device, model: ModelConfig, *, batch_size: int,
                backward: bool = True) -> tuple[bool, str]:
    """(bf16 autocast or not, why) for `model` run at `batch_size` rows per step: trained, or with `backward`
    False only run forward.

    fp32 and bf16 are taken as asked (bf16 must run, and train correctly, here: see `bf16_fault`); auto means
    bf16 on a GPU with bf16 or a CPU with native bf16 where it runs correctly and that device's measured rule
    says it is faster for the shape; fp32 everywhere else.
    """
    if precision is Precision.FP32:
        return False, "fp32"
    if precision is Precision.AUTO and not has_native_bf16(device):
        return False, "fp32 (auto: no native bf16 here)"
    fault = bf16_fault(device, model, backward=backward)
    if fault and precision is Precision.BF16:
        raise CharRNNError(f"--precision bf16: {fault}; use --precision fp32 or auto")
    if fault:
        return False, f"fp32 (auto: {fault})"
    if precision is Precision.BF16:
        return True, "bf16 autocast"
    cell, hidden = model.cell, model.hidden
    on_cpu = device.type == "cpu"  # else a GPU: no other device has native bf16 here
    if not (rule_prefers_bf16(cell, hidden, batch_size, amx=has_amx()) if on_cpu
            else gpu_rule_prefers_bf16(hidden, batch_size)):
        return False, (f"fp32 (auto: a {cell.value} of {hidden} units at batch {batch_size} trains faster in fp32 "
                       f"on {'a CPU without AMX' if on_cpu else 'a GPU'})")
    return True, "bf16 autocast (auto: native bf16)"


def autocast(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
