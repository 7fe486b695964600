"""CharRNN: a character-level recurrent language model with Graves (2013) skip connections. Pure nn.Module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charrnn import gru, onednn
from charrnn.config import Cell, ModelConfig

# One layer's recurrent state: (h, c) for an LSTM, (h,) for a GRU or plain RNN; each (1, B, H).
LayerState = tuple[Tensor, ...]
State = list[LayerState]

_RECURRENT = {Cell.LSTM: nn.LSTM, Cell.GRU: nn.GRU, Cell.RNN: nn.RNN}


class CharRNN(nn.Module):
    """ids (B, T) -> logits (B, T, V).

    Graves 2013, "Generating Sequences With Recurrent Neural Networks", §2 and figure 1: with `skip`,
    the input feeds every layer (layer n sees the input and layer n-1's output) and every layer feeds
    the output layer. Each layer is one fused nn.LSTM/GRU/RNN call over the whole window (oneDNN on
    CPU, cuDNN on GPU): no Python loop over time steps. The exception is the GRU on the CPU, which has no
    oneDNN kernel: there `charrnn.gru` runs the same math with its products through oneDNN (2x faster).
    The output layer's products go through oneDNN on the CPU too (`onednn.trainable_linear`).
    """

    fast_cpu_gru = True  # False: always nn.GRU (tests compare the two)
    fast_cpu_head = True  # False: always nn.Linear

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding)  # = one-hot input times a weight matrix
        recurrent = _RECURRENT[c.cell]
        self.layers = nn.ModuleList(
            recurrent(self.layer_input_size(n), c.hidden, batch_first=True) for n in range(c.layers)
        )
        self.dropout = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden * (c.layers if c.skip else 1), c.vocab_size)

    def layer_input_size(self, n: int) -> int:
        c = self.config
        if n == 0:
            return c.embedding
        return c.embedding + c.hidden if c.skip else c.hidden

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = device or self.head.weight.device
        zeros = lambda: torch.zeros(1, batch_size, self.config.hidden, device=device)  # noqa: E731
        per_layer = 2 if self.config.cell is Cell.LSTM else 1
        return [tuple(zeros() for _ in range(per_layer)) for _ in self.layers]

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self.embed(ids)  # (B, T, E)
        outputs: list[Tensor] = []
        new_state: State = []
        for n, layer in enumerate(self.layers):
            if n == 0:
                layer_in = x
            else:
                below = self.dropout(outputs[-1])  # (B, T, H)
                layer_in = torch.cat([x, below], -1) if self.config.skip else below  # Graves: input feeds every layer
            layer_state = None if state is None else _to_module_state(state[n])
            if self.config.cell is Cell.GRU and self.fast_cpu_gru and onednn.serves(layer_in):
                h0 = layer_in.new_zeros(len(layer_in), self.config.hidden) if layer_state is None else layer_state[0]
                out, h = gru.gru_layer(layer_in, h0, layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0,
                                       layer.bias_hh_l0)
                s = h.unsqueeze(0)
            else:
                out, s = layer(layer_in, layer_state)
            outputs.append(out)
            new_state.append(s if isinstance(s, tuple) else (s,))
        features = torch.cat(outputs, -1) if self.config.skip else outputs[-1]  # (B, T, H·L) with skips
        features = self.dropout(features)
        # (B, T, V); Graves 2013 §2: every layer feeds the output. On the CPU through oneDNN (2x torch's speed).
        if self.fast_cpu_head and onednn.serves(features):
            logits = onednn.trainable_linear(features, self.head.weight, self.head.bias)
        else:
            logits = self.head(features)
        return logits, new_state

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _to_module_state(layer_state: LayerState):
    return layer_state if len(layer_state) == 2 else layer_state[0]


def detach_state(state: State) -> State:
    """Truncated BPTT: keep the state's values, drop the graph behind them."""
    return [tuple(t.detach() for t in layer) for layer in state]


def from_checkpoint(state: dict) -> CharRNN:
    """Rebuild a model from a loaded checkpoint's plain data (its config and state_dict)."""
    from charrnn.errors import CharRNNError

    model = CharRNN(ModelConfig.from_dict(state["model_config"]))
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as e:
        raise CharRNNError(f"checkpoint weights do not fit its model configuration ({str(e).splitlines()[0][:100]}); "
                           "the file is damaged, use another checkpoint") from None
    return model
