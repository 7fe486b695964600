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

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_type: str) -> Context:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); a plain run is world size 1."""
    if not launched_by_torchrun():
        return Context()
    ctx = Context(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return ctx


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        try:  # wait for every rank: one tearing gloo down while rank 0 still saves can abort the other (seen)
            dist.barrier()
        except RuntimeError:  # a rank already failed; tear down anyway
            pass
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor, ctx: Context, dim: int) -> torch.Tensor:
    """Concatenate every rank's block along `dim` (rank order), e.g. hidden states (1, B_local, H) -> (1, B, H)."""
    if not ctx.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(ctx.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim)


def broadcast_flag(flag: bool, ctx: Context) -> bool:
    """True on every rank if it is true on any: used so all ranks stop on the same step."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())
