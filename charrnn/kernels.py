"""The one hook to charrnn/cpu: its faster CPU layers and products where that folder is present, plain torch
where it is not. Delete charrnn/cpu and charrnn still trains, samples and scores the same model, slower.

Model construction asks `layer(name)` for each torch layer class it builds (same parameters, same state_dict
keys); the sampler asks `batch1_products(weight, hidden, samples)`; training and eval call `keep_freed_memory()`
on the CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

try:
    from charrnn import cpu
except ImportError:  # the folder was removed: everything below falls back to plain torch
    cpu = None

_PLAIN = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN, "Linear": nn.Linear}


def layer(name: str) -> type[nn.Module]:
    """The class to build for torch's nn.<name>: a faster subclass on the CPU where there is one."""
    fast = cpu.layer_types() if cpu is not None else {}
    return fast.get(name, _PLAIN[name])


class PlainProducts:
    """`bias + x @ w` with torch.addmm; weights kept as (K, N)."""

    @staticmethod
    def matrix(w: Tensor) -> Tensor:
        return w.contiguous()

    @staticmethod
    def addmm(bias: Tensor, x: Tensor, w: Tensor) -> Tensor:
        return torch.addmm(bias, x, w)


def batch1_products(weight: Tensor, hidden: int, samples: int = 1):
    """The product routines (`matrix`, `addmm`) for the sampler's weights, which live where `weight` does, of a
    network `hidden` units wide stepping `samples` at once."""
    fast = cpu.batch1_products(weight, hidden, samples) if cpu is not None else None
    return fast or PlainProducts


def keep_freed_memory(device: torch.device) -> bool:
    """Keep freed memory in the process during training and eval on the CPU (charrnn/cpu/allocator.py)."""
    return device.type == "cpu" and cpu is not None and cpu.keep_freed_memory()
