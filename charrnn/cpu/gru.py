"""A GRU layer for the CPU whose matrix products all run through oneDNN.

nn.GRU on the CPU has no oneDNN kernel (nn.LSTM does): it steps through time with torch's default
matmul, which on some CPUs runs at a third of the machine's fp32 peak at the per-step shape (B, H) x (H, 3H).
This layer does the same math as nn.GRU (PyTorch's gate order r, z, n and its "linear before reset"
candidate) with its own forward and backward:

- the input projections of all time steps are one large product, before the loop;
- each step does one (B, H) x (H, 3H) product and a few elementwise ops, forward and backward;
- the weight gradients are one large product each, after the loop.

Every product goes through oneDNN (charrnn.cpu.onednn), faster than torch.mm there (bench/RESULTS.md). `OneDNNGRU` is an
nn.GRU (same parameters, same state_dict keys) that takes this path where `onednn.serves()` its input (fp32 on
the CPU outside autocast, op present) and nn.GRU's own elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charrnn.cpu import onednn


class OneDNNGRU(nn.GRU):
    """nn.GRU whose single batch-first layer runs `gru_layer` on the CPU in fp32."""

    def forward(self, x: Tensor, hx: Tensor | None = None):  # x (B, T, I), hx (1, B, H)
        if self.num_layers != 1 or self.bidirectional or not self.batch_first or not onednn.serves(x):
            return super().forward(x, hx)
        h0 = x.new_zeros(len(x), self.hidden_size) if hx is None else hx[0]
        out, h = gru_layer(x, h0, self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0)
        return out, h.unsqueeze(0)


def gru_layer(x: Tensor, h0: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
    """x (B, T, I), h0 (B, H) -> outputs (B, T, H), last state (B, H). Same values and gradients as nn.GRU."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, h0, w_ih, w_hh, b_ih, b_hh))
    out = _GRUFunction.apply(x, h0, w_ih, w_hh, b_ih, b_hh, needs_grad)
    return out.transpose(0, 1), out[-1]


class _GRUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, needs_grad):
        B, T, _ = x.shape
        H = w_hh.shape[1]
        xt = x.transpose(0, 1).reshape(T * B, -1)  # time-major rows: step t is rows [t·B, (t+1)·B)
        gi = onednn.linear(xt, w_ih, b_ih).view(T, B, 3 * H)  # every step's input projection in one product
        hs = x.new_empty(T, B, H)
        if needs_grad:  # what backward needs, computed per step while the step's values are in cache
            coef = x.new_empty(T, B, 3, H)  # dL/d(gh_r, gh_z, gh_n) per unit of dL/dh_t
            d_n = x.new_empty(T, B, H)      # dL/d(gi_n) per unit of dL/dh_t
            zs = x.new_empty(T, B, H)       # the update gate: dL/dh_(t-1) gets z·dL/dh_t directly
        h = h0.contiguous()
        for t in range(T):
            gh = onednn.linear(h, w_hh, b_hh)  # (B, 3H)
            rz = torch.add(gi[t, :, : 2 * H], gh[:, : 2 * H]).sigmoid_()
            r, z = rz[:, :H], rz[:, H:]
            gh_n = gh[:, 2 * H:]
            n = torch.addcmul(gi[t, :, 2 * H:], r, gh_n).tanh_()
            h_new = torch.lerp(n, h, z, out=hs[t])  # n + z·(h - n) = (1 - z)·n + z·h
            if needs_grad:
                zs[t] = z
                dn = torch.mul(1 - z, 1 - n * n, out=d_n[t])  # through the candidate's tanh
                c = coef[t]
                torch.mul(dn * gh_n, r - r * r, out=c[:, 0])  # r, inside n = tanh(gi_n + r·gh_n)
                torch.mul(h - n, z - z * z, out=c[:, 1])      # z, in (1 - z)·n + z·h
                torch.mul(dn, r, out=c[:, 2])                 # gh_n enters scaled by r
            h = h_new
        if needs_grad:
            ctx.save_for_backward(xt, h0, w_ih, w_hh, hs, coef, d_n, zs)
        return hs

    @staticmethod
    def backward(ctx, grad_hs, *_):
        xt, h0, w_ih, w_hh, hs, coef, d_n, zs = ctx.saved_tensors
        T, B, H = hs.shape
        grad_hs = grad_hs.contiguous()
        dh_all = torch.empty_like(hs)                    # dL/dh_t, the recurrent carry included
        d_g = torch.empty_like(coef)                     # dL/d(gh): the recurrent pre-activations
        w_hh_t = w_hh.T                                  # d_g @ w_hh = linear(d_g, w_hh.T), no copy
        carry = torch.zeros(B, H, dtype=hs.dtype)
        for t in range(T - 1, -1, -1):
            dh = torch.add(grad_hs[t], carry, out=dh_all[t])
            torch.mul(dh.unsqueeze(1), coef[t], out=d_g[t])
            carry = torch.addcmul(onednn.linear(d_g[t].view(B, 3 * H), w_hh_t), dh, zs[t])
        needs = ctx.needs_input_grad
        d_g = d_g.view(T * B, 3 * H)
        # Weight gradients: one product over all steps each. oneDNN copies a non-contiguous input but takes a
        # transposed weight as is, so the narrow operand (h or x) is the one transposed, not the 3H-wide gradient.
        grad_w_hh = grad_b_hh = None
        if needs[3]:
            h_prev_t = torch.empty(H, T, B, dtype=hs.dtype)  # h_(t-1) for every step, as (H, T·B)
            h_prev_t[:, 0] = h0.T
            h_prev_t[:, 1:] = hs[:-1].permute(2, 0, 1)
            grad_w_hh = onednn.linear(h_prev_t.view(H, T * B), d_g.T).T.contiguous()
        if needs[5]:
            grad_b_hh = d_g.sum(0)
        torch.mul(dh_all, d_n, out=d_g.view(T, B, 3, H)[:, :, 2])  # d_g becomes dL/d(gi): gi_n skips r
        grad_x = grad_h0 = grad_w_ih = grad_b_ih = None
        if needs[0]:
            grad_x = onednn.linear(d_g, w_ih.T).view(T, B, -1).transpose(0, 1)
        if needs[1]:
            grad_h0 = carry
        if needs[2]:
            grad_w_ih = onednn.linear(xt.T.contiguous(), d_g.T).T.contiguous()
        if needs[4]:
            grad_b_ih = d_g.sum(0)
        return grad_x, grad_h0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, None
