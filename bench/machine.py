"""What every benchmark records beside its figures: the CPU's name (lscpu) and an fp32 GEMM figure."""

from __future__ import annotations

import platform
import statistics
import subprocess
import time

import torch


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """lscpu's model name for a CPU, the card's name for a GPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                device: torch.device | str = "cpu") -> float:
    """torch.mm of two n x n matrices on `device`, median of `repeats` after one untimed run, in GFLOP/s."""
    device = torch.device(device)
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def gemm_summary(device: torch.device) -> str:
    """Both GEMM figures for a benchmark's header: 2048^3 on a CPU, 8192^3 on a GPU (a smaller one is over too soon)."""
    n = 8192 if device.type == "cuda" else 2048
    return (f"GEMM {n}^3: fp32 {gemm_gflops(n=n, device=device):.0f} GFLOP/s, "
            f"bf16 {gemm_gflops(torch.bfloat16, n=n, device=device):.0f} GFLOP/s")


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock timer measures it (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
