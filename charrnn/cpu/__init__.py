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


# oneDNN's small-batch product streams a wide layer's weights faster than torch.addmm (2x1024 sampled 2.3-2.9
# times as fast on the Zen 5), but each call costs about 15-20 us more. On the Zen 4, one sample: a 2x128 LSTM
# sampled 1.8 times as fast through addmm, 2x384 level, 2x512 1.2 times as fast through oneDNN; from 4 samples at
# once oneDNN won from 2x256 (bench/RESULTS.md, session 55).
BATCH1_ONEDNN_FROM_HIDDEN = 512
SEVERAL_SAMPLES = 4
SAMPLES_ONEDNN_FROM_HIDDEN = 256  # for SEVERAL_SAMPLES or more at once


def batch1_products(weight, hidden: int, samples: int = 1) -> type | None:
    """The sampler's product routines for `samples` at once from a network of `hidden` units with weights like
    `weight`, or None where plain torch.addmm should do (a narrow network, or off oneDNN's fp32 CPU path)."""
    wide = hidden >= (BATCH1_ONEDNN_FROM_HIDDEN if samples < SEVERAL_SAMPLES else SAMPLES_ONEDNN_FROM_HIDDEN)
    return onednn.Batch1Products if wide and onednn.serves(weight) else None


keep_freed_memory = allocator.keep_freed_memory
