"""torchrun awareness in one place: detect the environment, set up the process group, reduce across ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")  # this rank's training device: every collective's tensors live there

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> Context:
    """Join the process group torchrun describes; a plain run is world size 1. On GPUs each rank takes the GPU
    of its local rank, and the group has NCCL for CUDA tensors and gloo for any CPU tensor."""
    if not launched_by_torchrun():
        return Context(device=device)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world_size, local_rank, device)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        try:  # wait for every rank: one tearing gloo down while rank 0 still saves can abort the other (seen)
            dist.barrier()
        except RuntimeError:  # a rank already failed; tear down anyway
            pass
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: Context) -> list[float]:
    """Each value summed over every rank (float64, on the rank's device: NCCL takes no CPU tensors)."""
    if not ctx.enabled:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_gather_rows(tensor: torch.Tensor, ctx: Context, dim: int) -> torch.Tensor:
    """Concatenate every rank's block along `dim` (rank order), e.g. hidden states (1, B_local, H) -> (1, B, H)."""
    if not ctx.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim)


def any_rank(flag: bool, ctx: Context) -> bool:
    """True on every rank if it is true on any (an OR across ranks): all ranks stop on the same step."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
