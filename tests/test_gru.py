"""The CPU GRU layer (charrnn.gru) must be nn.GRU in values and gradients; CharRNN must pick it only where it serves."""

import pytest
import torch
from torch import nn

from charrnn.config import Cell
from charrnn.cpu import gru, onednn
from charrnn.model import CharRNN

from .conftest import tiny_config

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch build has no oneDNN linear op")


def test_the_fast_layer_matches_nn_gru_in_outputs_state_and_every_gradient():
    torch.manual_seed(0)
    B, T, IN, H = 3, 11, 5, 7
    reference = nn.GRU(IN, H, batch_first=True)
    x = torch.randn(B, T, IN, requires_grad=True)
    h0 = torch.randn(B, H, requires_grad=True)
    weights = (reference.weight_ih_l0, reference.weight_hh_l0, reference.bias_ih_l0, reference.bias_hh_l0)

    out_ref, h_ref = reference(x, h0.unsqueeze(0))
    out, h = gru.gru_layer(x, h0, *weights)
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.allclose(h, h_ref[0], atol=1e-6)

    probe = torch.randn(B, T, H)  # a loss that weights every output differently, plus the final state
    inputs = [x, h0, *weights]
    grads_ref = torch.autograd.grad((out_ref * probe).sum() + h_ref.square().sum(), inputs)
    grads = torch.autograd.grad((out * probe).sum() + h.square().sum(), inputs)
    for name, a, b in zip(["x", "h0", "w_ih", "w_hh", "b_ih", "b_hh"], grads, grads_ref):
        assert torch.allclose(a, b, atol=1e-5), name


def test_without_gradients_the_layer_gives_the_same_outputs():
    torch.manual_seed(1)
    layer = nn.GRU(4, 6, batch_first=True)
    x, h0 = torch.randn(2, 9, 4), torch.zeros(2, 6)
    with torch.no_grad():
        out, h = gru.gru_layer(x, h0, layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
        out_ref, _ = layer(x)
    assert torch.allclose(out, out_ref, atol=1e-6) and torch.equal(h, out[:, -1])


@pytest.mark.parametrize("skip", [True, False])
def test_charrnn_gru_trains_the_same_on_the_fast_path_and_on_nn_gru(skip):
    torch.manual_seed(2)
    fast = CharRNN(tiny_config(cell=Cell.GRU, skip=skip))
    assert isinstance(fast.layers[0], gru.OneDNNGRU)
    plain = CharRNN(tiny_config(cell=Cell.GRU, skip=skip), layer_type=lambda name: getattr(nn, name))
    plain.load_state_dict(fast.state_dict())  # the subclass keeps nn.GRU's parameters and state_dict keys
    ids = torch.randint(0, 29, (4, 13))
    results = []
    for model in (fast, plain):
        state = model.initial_state(4)
        logits, state = model(ids[:, :6], state)
        logits2, state = model(ids[:, 6:], state)  # state carried across windows, as in training
        torch.cat([logits, logits2], 1).logsumexp(-1).sum().backward()
        results.append((torch.cat([logits, logits2], 1), state[1][0], [p.grad.clone() for p in model.parameters()]))
    (a_logits, a_state, a_grads), (b_logits, b_state, b_grads) = results
    assert torch.allclose(a_logits, b_logits, atol=1e-5) and torch.allclose(a_state, b_state, atol=1e-6)
    for (name, _), a, b in zip(model.named_parameters(), a_grads, b_grads):
        assert torch.allclose(a, b, atol=1e-4), name

