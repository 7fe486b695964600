import warnings

import pytest
import torch
from torch import nn

from charrnn.config import Cell, ModelConfig
from charrnn.model import CharRNN, detach_state

from .conftest import tiny_config

GATES = {Cell.LSTM: 4, Cell.GRU: 3, Cell.RNN: 1}


def expected_parameters(cell: Cell, vocab: int, embedding: int, hidden: int, layers: int, skip: bool) -> int:
    """From the architecture: embedding, per-layer input and recurrent weights plus PyTorch's two bias vectors, head."""
    g = GATES[cell]
    total = vocab * embedding
    for n in range(layers):
        inputs = embedding if n == 0 else (embedding + hidden if skip else hidden)
        total += g * hidden * (inputs + hidden) + 2 * g * hidden
    head_in = hidden * layers if skip else hidden
    return total + head_in * vocab + vocab


def test_classic_two_by_1024_skip_lstm_has_13_6_million_parameters():
    model = CharRNN(ModelConfig(vocab_size=103, embedding=103, hidden=1024, layers=2, skip=True))
    assert model.parameter_count() == expected_parameters(Cell.LSTM, 103, 103, 1024, 2, True) == 13_664_728


def test_classic_configuration_without_skips_has_13_1_million_parameters():
    model = CharRNN(ModelConfig(vocab_size=103, embedding=103, hidden=1024, layers=2, skip=False))
    assert model.parameter_count() == expected_parameters(Cell.LSTM, 103, 103, 1024, 2, False) == 13_137_368


@pytest.mark.parametrize("cell", list(Cell))
@pytest.mark.parametrize("skip", [True, False])
def test_parameter_count_follows_the_architecture_for_every_cell(cell, skip):
    config = ModelConfig(vocab_size=37, cell=cell, embedding=11, hidden=24, layers=3, skip=skip)
    assert CharRNN(config).parameter_count() == expected_parameters(cell, 37, 11, 24, 3, skip)


def test_every_layer_reads_the_input_and_feeds_the_head_with_skips():
    model = CharRNN(tiny_config(layers=3))
    assert [layer.input_size for layer in model.layers] == [8, 8 + 16, 8 + 16]
    assert model.head.in_features == 3 * 16


@pytest.mark.parametrize("cell", list(Cell))
def test_gradients_reach_every_layer_and_every_skip_path(cell):
    torch.manual_seed(0)
    model = CharRNN(tiny_config(cell=cell, layers=3))
    logits, _ = model(torch.randint(0, 29, (2, 12)))
    logits.sum().backward()
    H, E = 16, 8
    for n, layer in enumerate(model.layers):
        assert layer.weight_hh_l0.grad.abs().sum() > 0, f"layer {n} recurrent weights"
        assert layer.weight_ih_l0.grad[:, :E].abs().sum() > 0, f"skip path input -> layer {n}"
        if n > 0:
            assert layer.weight_ih_l0.grad[:, E:].abs().sum() > 0, f"layer {n - 1} -> layer {n}"
        assert model.head.weight.grad[:, n * H:(n + 1) * H].abs().sum() > 0, f"skip path layer {n} -> output"
    assert model.embed.weight.grad.abs().sum() > 0


def test_state_carries_across_windows_like_one_long_window():
    torch.manual_seed(0)
    model = CharRNN(tiny_config()).eval()
    ids = torch.randint(0, 29, (3, 20))
    whole, _ = model(ids)
    first, state = model(ids[:, :7])
    second, _ = model(ids[:, 7:], detach_state(state))
    assert torch.allclose(torch.cat([first, second], 1), whole, atol=1e-6)


def naive_lstm_forward(model: CharRNN, ids: torch.Tensor) -> torch.Tensor:
    """Oracle: the same weights run step by step through nn.LSTMCell, with the skips written out by hand."""
    cells = []
    for layer in model.layers:
        cell = nn.LSTMCell(layer.input_size, layer.hidden_size)
        cell.load_state_dict({"weight_ih": layer.weight_ih_l0, "weight_hh": layer.weight_hh_l0,
                              "bias_ih": layer.bias_ih_l0, "bias_hh": layer.bias_hh_l0})
        cells.append(cell)
    B, T = ids.shape
    state = [(torch.zeros(B, 16), torch.zeros(B, 16)) for _ in cells]
    out = []
    for t in range(T):
        x = model.embed(ids[:, t])
        below, tops = None, []
        for n, cell in enumerate(cells):
            inp = x if below is None else torch.cat([x, below], 1)
            state[n] = cell(inp, state[n])
            below = state[n][0]
            tops.append(below)
        out.append(model.head(torch.cat(tops, 1)))
    return torch.stack(out, 1)


def test_fused_forward_matches_a_naive_step_by_step_lstm():
    torch.manual_seed(0)
    model = CharRNN(tiny_config()).eval()
    ids = torch.randint(0, 29, (2, 15))
    with torch.no_grad():
        assert torch.allclose(model(ids)[0], naive_lstm_forward(model, ids), atol=1e-5)


def test_embedding_dropout_acts_while_training_and_never_in_eval_mode():
    torch.manual_seed(0)
    model = CharRNN(tiny_config(embedding_dropout=0.5))
    plain = CharRNN(tiny_config())
    plain.load_state_dict(model.state_dict())
    ids = torch.randint(0, 29, (2, 12))
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])  # a fresh mask each call
    model.eval()
    plain.eval()
    assert torch.equal(model(ids)[0], plain(ids)[0])


def test_variational_dropout_keeps_one_mask_per_stream_for_the_whole_window():
    from charrnn.model import SequenceDropout

    torch.manual_seed(0)
    drop = SequenceDropout(0.5).train()
    out = drop(torch.ones(4, 30, 64))
    assert torch.equal(out, out[:, :1, :].expand_as(out))  # the same units dropped at every time step
    assert set(out.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert 0.3 < (out[:, 0] == 0).float().mean() < 0.7
    assert not torch.equal(out[0, 0], out[1, 0])  # streams differ
    assert torch.equal(drop.eval()(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


def test_variational_dropout_is_used_where_the_config_asks():
    torch.manual_seed(0)
    model = CharRNN(tiny_config(dropout=0.3, embedding_dropout=0.2, variational=True)).train()
    ids = torch.randint(0, 29, (2, 12))
    assert type(model.dropout).__name__ == type(model.embedding_dropout).__name__ == "SequenceDropout"
    assert not torch.equal(model(ids)[0], model(ids)[0])


@pytest.mark.parametrize("cell", list(Cell))
def test_weight_drop_masks_the_recurrent_weights_while_training_only(cell):
    torch.manual_seed(0)
    model = CharRNN(tiny_config(cell=cell, weight_drop=0.5))
    plain = CharRNN(tiny_config(cell=cell))
    plain.load_state_dict(model.state_dict())  # the same parameters and keys: a checkpoint loads either way
    ids = torch.randint(0, 29, (2, 12))
    model.train()
    assert not torch.equal(model(ids)[0], model(ids)[0])  # a fresh mask each call
    model.zero_grad()
    model(ids)[0].sum().backward()
    grad = model.layers[0].weight_hh_l0.grad
    assert 0.3 < (grad == 0).float().mean() < 0.7  # dropped weights get no gradient
    model.eval()
    plain.eval()
    assert torch.equal(model(ids)[0], plain(ids)[0])


def test_weight_drop_zeroes_whole_weights_not_activations():
    """With (almost surely) every recurrent weight dropped, the model computes what one whose hidden-to-hidden
    weights are zero computes: the mask falls on the weights, not on the units' outputs."""
    torch.manual_seed(0)
    model = CharRNN(tiny_config(weight_drop=0.999999)).train()
    cut = CharRNN(tiny_config())
    cut.load_state_dict(model.state_dict())
    with torch.no_grad():
        for layer in cut.layers:
            layer.weight_hh_l0.zero_()
    ids = torch.randint(0, 29, (2, 12))
    with torch.no_grad():
        assert torch.allclose(model(ids)[0], cut(ids)[0], atol=1e-6)


def test_weight_drop_keeps_cudnns_copy_notice_off_the_users_stderr():
    """On CUDA the dropped W_hh lies outside cuDNN's flat weight buffer, and torch warns that it copies it: with a
    fresh mask each step that copy is the design, so the notice is not the user's business. Simulated here by a
    layer that warns as cuDNN does; any other warning still gets through."""
    model = CharRNN(tiny_config(weight_drop=0.5)).train()
    cudnn_notice = "RNN module weights are not part of single contiguous chunk of memory. This means ..."
    for layer in model.layers:
        layer.register_forward_pre_hook(lambda *_: warnings.warn(cudnn_notice, UserWarning, stacklevel=1))
    ids = torch.randint(0, 29, (2, 12))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model(ids)
        model.layers[0].register_forward_pre_hook(lambda *_: warnings.warn("something else", UserWarning, stacklevel=1))
        model(ids)
    assert [str(w.message) for w in caught] == ["something else"]
