"""Matrix products through oneDNN on the CPU, where torch's default fp32 path is slow.

torch.mm/addmm in fp32 go to torch's default BLAS. On some CPUs (measured: AMD EPYC Zen 5) that runs at a
third to a half of what oneDNN reaches at the shapes a char-RNN uses: 130 vs 340 GFLOP/s for a recurrent
step (32, 1024) x (1024, 3072), 29 vs 53 GB/s of weights read for a batch-1 step. oneDNN's linear is
reachable as `torch.ops.mkldnn._linear_pointwise`, an internal op that inductor uses; `available()` checks
it once and callers fall back to plain torch where it is missing or wrong.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (M, K) @ weight (N, K)^T + bias (N,). weight may be a transposed view (no copy); x is made contiguous."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


@functools.cache
def available() -> bool:
    """Whether this torch build has the op and it computes x @ w^T + b (also with a transposed weight view)."""
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(*s, generator=g) for s in ((3, 5), (4, 5), (4,)))
        return bool(torch.allclose(linear(x, w, b), torch.addmm(b, x, w.T), atol=1e-4)
                    and torch.allclose(linear(w.T.contiguous().T, x), w @ x.T, atol=1e-4))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
