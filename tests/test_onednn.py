"""charrnn.onednn's trainable linear must be F.linear in values and gradients; CharRNN's head uses it on the CPU."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from charrnn.config import Cell
from charrnn.cpu import onednn
from charrnn.model import CharRNN

from .conftest import tiny_config

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN linear op")


@pytest.mark.parametrize("with_bias", [True, False])
def test_trainable_linear_matches_f_linear_in_values_and_every_gradient(with_bias):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 7, requires_grad=True)  # (B, T, K), as the head sees it
    w = torch.randn(11, 7, requires_grad=True)
    b = torch.randn(11, requires_grad=True) if with_bias else None
    out, ref = onednn.trainable_linear(x, w, b), F.linear(x, w, b)
    assert out.shape == ref.shape == (3, 5, 11) and torch.allclose(out, ref, atol=1e-5)

    probe = torch.randn(3, 5, 11)  # weights every output differently
    inputs = [x, w] + ([b] if with_bias else [])
    grads = torch.autograd.grad((out * probe).sum(), inputs)
    grads_ref = torch.autograd.grad((ref * probe).sum(), inputs)
    for name, g, g_ref in zip(["x", "weight", "bias"], grads, grads_ref):
        assert torch.allclose(g, g_ref, atol=1e-5), name


def test_gradients_flow_only_where_asked():
    x, w = torch.randn(4, 3), torch.randn(2, 3, requires_grad=True)
    out = onednn.trainable_linear(x, w)
    (grad_w,) = torch.autograd.grad(out.sum(), [w])
    assert torch.allclose(grad_w, x.sum(0).expand(2, 3), atol=1e-6)


@pytest.mark.parametrize("cell", [Cell.LSTM, Cell.GRU])
def test_charrnn_trains_the_same_with_the_onednn_head_and_nn_linear(cell):
    torch.manual_seed(3)
    fast = CharRNN(tiny_config(cell=cell))
    assert isinstance(fast.head, onednn.OneDNNLinear)
    plain = CharRNN(tiny_config(cell=cell), layer_type=lambda name: getattr(nn, name))
    plain.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 29, (4, 9))
    results = []
    for model in (fast, plain):
        logits, _ = model(ids)
        F.cross_entropy(logits.transpose(1, 2), ids).backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters()]))
    (a_logits, a_grads), (b_logits, b_grads) = results
    assert torch.allclose(a_logits, b_logits, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), a_grads, b_grads):
        assert torch.allclose(a, b, atol=1e-5), name


def test_onednn_serves_only_fp32_cpu_outside_autocast():
    x = torch.zeros(2, 3)
    assert onednn.serves(x)
    assert not onednn.serves(x.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not onednn.serves(x)  # bf16 goes through nn.Linear and nn.GRU, which autocast knows
