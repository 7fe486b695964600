"""Speed paths that only the CPU needs: oneDNN products, a oneDNN GRU layer, and malloc tuning.

Nothing here changes what is computed: each piece matches plain torch in values and gradients (tests). The rest
of charrnn reaches this folder only through `charrnn.kernels`, the one hook; without the folder charrnn runs
the same model on plain torch, slower.
"""

from __future__ import annotations

from torch import nn

from charrnn.cpu import allocator, onednn
from charrnn.cpu.gru import OneDNNGRU


def layer_types() -> dict[str, type[nn.Module]]:
    """Drop-in subclasses, by the torch class they replace; each falls back to its parent off the fp32 CPU path."""
    if not onednn.available():
        return {}
    return {"GRU": OneDNNGRU, "Linear": onednn.OneDNNLinear}


def batch1_products(weight) -> type | None:
    """The sampler's product routines for weights like `weight`, or None where plain torch.addmm should do."""
    return onednn.Batch1Products if onednn.serves(weight) else None


keep_freed_memory = allocator.keep_freed_memory
