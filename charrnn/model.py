"""CharRNN: a character-level recurrent language model with Graves (2013) skip connections. Pure nn.Module."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from charrnn import kernels
from charrnn.config import Cell, ModelConfig

# One layer's recurrent state: (h, c) for an LSTM, (h,) for a GRU or plain RNN; each (1, B, H).
LayerState = tuple[Tensor, ...]
State = list[LayerState]


class CharRNN(nn.Module):
    """ids (B, T) -> logits (B, T, V).

    Graves 2013, "Generating Sequences With Recurrent Neural Networks", §2 and figure 1: with `skip`, the
    input feeds every layer (layer n reads the input and layer n-1's output) and every layer feeds the output
    layer. Each layer is one fused nn.LSTM/GRU/RNN call over the whole window (oneDNN on the CPU, cuDNN on a
    GPU): no Python loop over time steps.

    `layer_type(name)` gives the class to build for torch's nn.<name>; by default `kernels.layer`, which
    swaps in CPU-only subclasses with the same parameters (charrnn/cpu), so a checkpoint loads either way.
    """

    def __init__(self, config: ModelConfig, layer_type: Callable[[str], type[nn.Module]] = kernels.layer):
        super().__init__()
        self.config = c = config
        self.embed = nn.Embedding(c.vocab_size, c.embedding)  # = one-hot input times a weight matrix
        recurrent = layer_type(c.cell.name)
        self.layers = nn.ModuleList(
            recurrent(c.layer_input_size(n), c.hidden, batch_first=True) for n in range(c.layers)
        )
        self.dropout = _dropout(c.dropout, c.variational)
        self.embedding_dropout = _dropout(c.embedding_dropout, c.variational)
        self.head = layer_type("Linear")(c.hidden * (c.layers if c.skip else 1), c.vocab_size)
        self.generator: torch.Generator | None = None  # where its dropout draws from; None: torch's default stream

    def use_generator(self, generator: torch.Generator | None) -> None:
        """Draw every dropout and weight-drop mask from `generator` (None: torch's default stream)."""
        self.generator = self.dropout.generator = self.embedding_dropout.generator = generator

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = device or self.head.weight.device
        per_layer = 2 if self.config.cell is Cell.LSTM else 1
        return [tuple(torch.zeros(1, batch_size, self.config.hidden, device=device) for _ in range(per_layer))
                for _ in self.layers]

    def forward(self, ids: Tensor, state: State | None = None, *, per_member: bool = False) -> tuple[Tensor, State]:
        """Logits (B, T, V) and the new state; with `per_member`, (1, B, T, V): one member's, as Ensemble gives K."""
        x = self.embedding_dropout(self.embed(ids))  # (B, T, E)
        outputs: list[Tensor] = []  # each layer's output, (B, T, H)
        new_state: State = []
        for n, layer in enumerate(self.layers):
            if n == 0:
                layer_in = x
            else:
                below = self.dropout(outputs[-1])
                layer_in = torch.cat([x, below], -1) if self.config.skip else below  # Graves: input feeds every layer
            out, s = self._run_layer(layer, layer_in, None if state is None else _to_module_state(state[n]))
            outputs.append(out)
            new_state.append(s if isinstance(s, tuple) else (s,))
        features = torch.cat(outputs, -1) if self.config.skip else outputs[-1]  # (B, T, H·L) with skips
        logits = self.head(self.dropout(features))  # (B, T, V); Graves 2013 §2: every layer feeds the output
        return (logits.unsqueeze(0) if per_member else logits), new_state

    def _run_layer(self, layer: nn.Module, x: Tensor, state):
        p = self.config.weight_drop
        if not (self.training and p > 0):
            return layer(x, state)
        # DropConnect (Merity et al. 2017): the kernel runs on a dropped copy of W_hh, one mask for the step's whole
        # window, so the recurrence itself is regularised and the fused call stays.
        from torch.func import functional_call  # here: importing torch.func warns when numpy is absent

        dropped = {"weight_hh_l0": dropout(layer.weight_hh_l0, p, self.generator)}
        with warnings.catch_warnings():
            # cuDNN copies a weight that lies outside the layer's flat buffer, as it must for a fresh mask each step,
            # and says so; the copy is one W_hh per layer per step, small beside the step's work.
            warnings.filterwarnings("ignore", message="RNN module weights are not part of single contiguous chunk")
            return functional_call(layer, dropped, (x, state))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Ensemble(nn.Module):
    """`config.members` CharRNNs of one shape side by side: ids (B, T) -> log-probabilities (B, T, V) of the mean of
    their distributions, which softmax, cross-entropy and sampling read as logits.

    Each member has its own weights and state (the state is the members' layer states in turn) and is trained on its
    own loss (`member_losses`): averaging the probabilities of networks trained apart beat every single network of
    the same shape on held-out text (bench/QUALITY.md, session 49), where one network over-fits a small text long
    before the budget ends.
    """

    def __init__(self, config: ModelConfig, layer_type: Callable[[str], type[nn.Module]] = kernels.layer):
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(CharRNN(replace(config, members=1), layer_type) for _ in range(config.members))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return [layer for member in self.members for layer in member.initial_state(batch_size, device)]

    def forward(self, ids: Tensor, state: State | None = None, *, per_member: bool = False) -> tuple[Tensor, State]:
        """Mixed log-probabilities (B, T, V), or with `per_member` every member's logits (K, B, T, V); the new state."""
        states = member_states(state, self.config) if state is not None else [None] * len(self.members)
        outputs = [member(ids, s) for member, s in zip(self.members, states)]
        logits = torch.stack([out for out, _ in outputs])
        new_state = [layer for _, s in outputs for layer in s]
        return (logits if per_member else mixture_log_probs(logits)), new_state

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def seed_members(self) -> None:
        """Give each member a random stream of its own for the next training step, seeded from torch's default one, so
        that members stepped on threads side by side (charrnn.lanes) draw the same masks whatever order the threads
        run in, and the same as stepped in turn; the default stream (which checkpoints keep) moves on alike."""
        seeds = torch.randint(0, 2**62, (len(self.members),)).tolist()
        for member, seed in zip(self.members, seeds):
            if member.generator is None:
                member.use_generator(torch.Generator(device=member.head.weight.device))
            member.generator.manual_seed(seed)


Network = CharRNN | Ensemble


def build(config: ModelConfig, layer_type: Callable[[str], type[nn.Module]] = kernels.layer) -> Network:
    """The network a configuration describes: one CharRNN, or an Ensemble of `config.members`."""
    return CharRNN(config, layer_type) if config.members == 1 else Ensemble(config, layer_type)


def members(network: Network) -> list[CharRNN]:
    """The CharRNNs a network is made of: itself, or an ensemble's members."""
    return list(network.members) if isinstance(network, Ensemble) else [network]


def member_states(state: State, config: ModelConfig) -> list[State]:
    """A network's state as each member's: `config.layers` layer states apiece."""
    return [state[k * config.layers: (k + 1) * config.layers] for k in range(config.members)]


def mixture_log_probs(member_logits: Tensor) -> Tensor:
    """(K, ..., V) logits -> (..., V) log-probabilities of the mean of the K distributions, in fp32; one member's
    logits pass as they are (softmax reads them the same), so a single network computes what it always did."""
    if member_logits.shape[0] == 1:
        return member_logits[0]
    log_probs = F.log_softmax(member_logits.float(), -1)
    return torch.logsumexp(log_probs, 0) - math.log(member_logits.shape[0])


def member_losses(member_logits: Tensor, targets: Tensor) -> Tensor:
    """The sum over members of each one's mean cross-entropy (nats) on `targets` (B, T): what training minimises, so
    each member's gradient is the one it would get trained alone."""
    flat = member_logits.float().reshape(member_logits.shape[0], -1, member_logits.shape[-1])
    return sum(F.cross_entropy(logits, targets.reshape(-1)) for logits in flat)


def dropout(x: Tensor, p: float, generator: torch.Generator | None) -> Tensor:
    """F.dropout in training, its mask drawn from `generator` where one is given (F.dropout takes none); with None
    exactly F.dropout, so a single network computes what it always did."""
    if generator is None:
        return F.dropout(x, p)
    return x * torch.empty_like(x).bernoulli_(1 - p, generator=generator).div_(1 - p)


class Dropout(nn.Dropout):
    """nn.Dropout that draws from `generator` where one is set (CharRNN.use_generator)."""

    generator: torch.Generator | None = None

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.generator) if self.training and self.p > 0 else x


class SequenceDropout(nn.Module):
    """Dropout with one mask per stream for the whole window, shared across time steps (Gal & Ghahramani 2016's
    variational dropout on a layer's inputs); the fused recurrent kernels stay untouched."""

    generator: torch.Generator | None = None

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:  # (B, T, F)
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p, generator=self.generator)
        return x * keep / (1 - self.p)


def _dropout(p: float, variational: bool) -> nn.Module:
    return SequenceDropout(p) if variational else Dropout(p)


def _to_module_state(layer_state: LayerState):
    """Our per-layer tuple as torch's layers take it: (h, c) for an LSTM, h alone otherwise."""
    return layer_state if len(layer_state) == 2 else layer_state[0]


def with_even_embedding(config: ModelConfig, weights: Mapping[str, Tensor]) -> tuple[ModelConfig, dict[str, Tensor]]:
    """A model of odd embedding width as the same function one column wider: a zero column in the embedding and in
    each layer's input weights where the embedding ends. Checkpoints from before session 32 embed in the alphabet's
    size, often odd, which oneDNN's bf16 kernels on a CPU with AMX run 1.7-1.8 times slower a step (bench/RESULTS.md,
    session 32). Training keeps both columns at zero: each one's gradient is a product with the other."""
    if config.embedding % 2 == 0:
        return config, dict(weights)
    return (replace(config, embedding=config.embedding + 1),
            {name: pad_embedding_column(name, tensor, config) for name, tensor in weights.items()})


def pad_embedding_column(name: str, tensor: Tensor, config: ModelConfig) -> Tensor:
    """`tensor` (the weight `name` of a model with `config`, or an optimiser moment of it) with a zero column where the
    embedding ends, if that weight reads the embedding; any other passes unchanged."""
    if name.startswith("members."):  # an ensemble's member k: members.k.<a CharRNN's name>
        name = name.split(".", 2)[2]
    reads_embedding = name == "embed.weight" or (
        name.startswith("layers.") and name.endswith(".weight_ih_l0") and (config.skip or name == "layers.0.weight_ih_l0"))
    if not reads_embedding:
        return tensor
    at = config.embedding  # a layer reads [embedding, layer below] (CharRNN.forward): the embedding comes first
    return torch.cat([tensor[:, :at], tensor.new_zeros(tensor.shape[0], 1), tensor[:, at:]], dim=1)


def detach_state(state: State) -> State:
    """Truncated BPTT: keep the state's values, drop the graph behind them."""
    return [tuple(t.detach() for t in layer) for layer in state]
