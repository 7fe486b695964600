"""Matrix products through oneDNN on the CPU, where torch's default fp32 path is slow.

torch.mm/addmm in fp32 go to torch's default BLAS. On some CPUs (measured: AMD EPYC Zen 5) that runs at a
third to a half of what oneDNN reaches at the shapes a char-RNN uses, for the recurrent step and for the
batch-1 weight reads alike (bench/RESULTS.md, sessions 2-3; on a Zen 3 the two were level, session 4). oneDNN's linear is
reachable as `torch.ops.mkldnn._linear_pointwise`, an internal op that inductor uses; `available()` checks
it once and callers fall back to plain torch where it is missing or wrong.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn


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


def serves(x: Tensor) -> bool:
    """Whether oneDNN's fp32 linear should compute with x: fp32 CPU tensors outside autocast, op available."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and available())


class OneDNNLinear(nn.Linear):
    """nn.Linear (same parameters and state_dict keys) whose forward and backward run through oneDNN on the CPU
    in fp32 (`trainable_linear`)."""

    def forward(self, x: Tensor) -> Tensor:
        if serves(x):
            return trainable_linear(x, self.weight, self.bias)
        return super().forward(x)


class Batch1Products:
    """The sampler's per-step products `bias + x @ w` through oneDNN, which streamed the weights about twice as
    fast as torch.addmm at batch 1 on the Zen 5 (bench/RESULTS.md, session 2)."""

    @staticmethod
    def matrix(w: Tensor) -> Tensor:
        """A (K, N) weight as `addmm` wants it: (N, K), contiguous."""
        return w.T.contiguous()

    @staticmethod
    def addmm(bias: Tensor, x: Tensor, w: Tensor) -> Tensor:
        """bias (N,) or (B, N) + x (B, K) @ w, with w from `matrix`."""
        if bias.dim() == 1 or bias.shape[0] == 1:
            return linear(x, w, bias.reshape(-1))  # the bias add fused into the product
        return linear(x, w).add_(bias)


def trainable_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """F.linear over x (..., K) with its backward through oneDNN too: about twice torch's speed at the output
    layer's shapes (e.g. (2048, 512) x (512, 103)) on the Zen 5 (bench/RESULTS.md, session 3)."""
    out = _LinearFunction.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.view(*x.shape[:-1], weight.shape[0])


class _LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = linear(grad, weight.T)  # (M, N) @ (N, K)
        if ctx.needs_input_grad[1]:
            grad_w = linear(grad.T.contiguous(), x.T)  # (N, M) @ (M, K): 2x faster than x^T @ grad here
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.sum(0)
        return grad_x, grad_w, grad_b
