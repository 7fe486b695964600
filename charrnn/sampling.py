"""Generate text from a model: a pure next-character chooser and a fast one-character-at-a-time stepper."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch import Tensor

from charrnn import kernels
from charrnn.config import Cell, SampleConfig
from charrnn.model import CharRNN, Network, member_states, members, mixture_log_probs
from charrnn.vocab import Vocab


def choose_next(logits: Tensor, generator: torch.Generator, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """logits (B, V) -> ids (B,). Temperature 0 is greedy argmax; top-k and top-p (nucleus) filter first."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative - sorted_logits.softmax(-1) >= top_p  # keeps the smallest prefix reaching top_p
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


class FastStepper:
    """One character per call for B parallel samples, over weights rearranged once for batch-1 speed.

    The per-step cost at batch 1 is per-op overhead and weight reads, so: the embedding times every input
    weight matrix becomes a lookup table of gate pre-activations (V, G·H) with the biases folded in; the
    skip input and the recurrent input of a layer share one addmm; LSTM gates are reordered (i, f, o, g)
    so one sigmoid and one tanh cover them. Matches CharRNN.forward to float tolerance (tested).

    The products go through `kernels.batch1_products`: oneDNN for a wide network on the CPU where torch has it
    (it streams wide weights faster at batch 1, at a higher cost per call: bench/RESULTS.md), torch.addmm elsewhere.
    """

    def __init__(self, model: CharRNN, products=None, samples: int = 1):
        c = model.config
        self.products = products or kernels.batch1_products(model.head.weight, c.hidden, samples)
        self.cell = c.cell
        self.hidden = c.hidden
        self.skip = c.skip
        with torch.no_grad():
            emb = model.embed.weight  # (V, E)
            self.tables: list[Tensor] = []   # (V, G·H): input contribution per character
            self.weights: list[Tensor] = []  # (H_below + H, G·H) or (H, G·H): recurrent (and skip) weights
            self.gru_hh: list[tuple[Tensor, Tensor]] = []
            for n, layer in enumerate(model.layers):
                w_ih, w_hh = layer.weight_ih_l0, layer.weight_hh_l0
                b_ih, b_hh = layer.bias_ih_l0, layer.bias_hh_l0
                sees_input = n == 0 or c.skip
                e = c.embedding if sees_input else 0
                table = emb @ w_ih[:, :e].T + b_ih if sees_input else b_ih.expand(emb.shape[0], -1)
                w_below = w_ih[:, e:]  # (G·H, H_below): empty for layer 0
                if c.cell is Cell.GRU:
                    self.tables.append(table.contiguous())
                    self.weights.append(self._matrix(w_below.T))
                    self.gru_hh.append((self._matrix(w_hh.T), b_hh.clone()))
                    continue
                weights = torch.cat([w_below, w_hh], 1).T  # (H_below + H, G·H)
                table = table + b_hh
                if c.cell is Cell.LSTM:
                    order = _lstm_gate_order(c.hidden)
                    table, weights = table[:, order], weights[:, order]
                self.tables.append(table.contiguous())
                self.weights.append(self._matrix(weights))
            self.head_w = self._matrix(model.head.weight.T)  # (H·L, V)
            self.head_b = model.head.bias.clone()

    def _matrix(self, w: Tensor) -> Tensor:
        """A (K, N) matrix in the layout `_addmm` wants."""
        return self.products.matrix(w)

    def _addmm(self, bias: Tensor, x: Tensor, w: Tensor) -> Tensor:
        """bias (N,) or (B, N) + x (B, K) @ w."""
        return self.products.addmm(bias, x, w)

    def _lookup(self, table: Tensor, ids: Tensor) -> Tensor:
        """Each id's row of a layer's table: (B, G·H)."""
        return table[ids]

    def initial_state(self, model_state) -> list[tuple[Tensor, ...]]:
        """From CharRNN's state ((1, B, H) tensors) to this stepper's ((B, H) tensors)."""
        return [tuple(t[0].contiguous() for t in layer) for layer in model_state]

    def first_member(self, state: list[tuple[Tensor, ...]]) -> list[tuple[Tensor, ...]]:
        """The state per layer as (B, H) tensors: this network's (an ensemble's first member's)."""
        return state

    @torch.inference_mode()
    def step(self, ids: Tensor, state: list[tuple[Tensor, ...]]) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        """ids (B,) -> logits (B, V), new state. (Written for any leading dimensions: EnsembleStepper adds one.)"""
        H = self.hidden
        below: Tensor | None = None
        new_state = []
        outputs = []
        for n, table in enumerate(self.tables):
            x = self._lookup(table, ids)  # (B, G·H)
            if self.cell is Cell.GRU:
                (h,) = state[n]
                gi = x if below is None else self._addmm(x, below, self.weights[n])
                w_hh, b_hh = self.gru_hh[n]
                gh = self._addmm(b_hh, h, w_hh)
                rz = torch.sigmoid(gi[..., : 2 * H] + gh[..., : 2 * H])
                r, z = rz[..., :H], rz[..., H:]
                candidate = torch.tanh(torch.addcmul(gi[..., 2 * H:], r, gh[..., 2 * H:]))
                h = candidate + z * (h - candidate)  # (1 - z)·n + z·h
                new_state.append((h,))
            else:
                prev = state[n]
                h_in = prev[0] if below is None else torch.cat([below, prev[0]], -1)
                gates = self._addmm(x, h_in, self.weights[n])  # (B, G·H)
                if self.cell is Cell.LSTM:
                    ifo = torch.sigmoid(gates[..., : 3 * H])
                    g = torch.tanh(gates[..., 3 * H:])
                    c = torch.addcmul(ifo[..., H: 2 * H] * prev[1], ifo[..., :H], g)
                    h = ifo[..., 2 * H:] * torch.tanh(c)
                    new_state.append((h, c))
                else:
                    h = torch.tanh(gates)
                    new_state.append((h,))
            outputs.append(h)
            below = h
        features = torch.cat(outputs, -1) if self.skip else outputs[-1]
        return self._addmm(self.head_b, features, self.head_w), new_state


class StackedProducts(kernels.PlainProducts):
    """`bias + x @ w` for every member at once: x (K, B, in), weights stacked (K, in, out), one torch.baddbmm."""

    @staticmethod
    def addmm(bias: Tensor, x: Tensor, w: Tensor) -> Tensor:
        return torch.baddbmm(bias, x, w)


class EnsembleStepper(FastStepper):
    """FastStepper's arithmetic for all of an ensemble's members at once, their logits mixed as model.Ensemble mixes
    them: each member's tables and matrices stacked (K, ...), one batched product (baddbmm) for every member where
    stepping them in turn took one each. 2.8 times the characters a second of members in turn with 4 members of 2x192
    (2,327 against 832; one network 3,928; bench/QUALITY.md, session 50). Its state is per layer (K, B, H)."""

    def __init__(self, model: Network):
        self.config = c = model.config
        self.products = StackedProducts
        each = [FastStepper(member, products=kernels.PlainProducts) for member in members(model)]  # (in, out) matrices
        self.cell, self.hidden, self.skip = c.cell, c.hidden, c.skip
        self.tables = [torch.stack(layer) for layer in zip(*(s.tables for s in each))]  # (K, V, G·H)
        self.weights = [torch.stack(layer) for layer in zip(*(s.weights for s in each))]  # (K, in, G·H)
        self.gru_hh = [(torch.stack([w for w, _ in layer]), torch.stack([b for _, b in layer])[:, None])
                       for layer in zip(*(s.gru_hh for s in each))]
        self.head_w = torch.stack([s.head_w for s in each])  # (K, H·L, V)
        self.head_b = torch.stack([s.head_b for s in each])[:, None]  # (K, 1, V)

    def _lookup(self, table: Tensor, ids: Tensor) -> Tensor:
        return table[:, ids]  # (K, B, G·H)

    def initial_state(self, model_state) -> list[tuple[Tensor, ...]]:
        """From model.Ensemble's state (each member's layers in turn, (1, B, H) tensors) to (K, B, H) per layer."""
        per_member = member_states(model_state, self.config)
        return [tuple(torch.cat(parts).contiguous() for parts in zip(*layers)) for layers in zip(*per_member)]

    def first_member(self, state: list[tuple[Tensor, ...]]) -> list[tuple[Tensor, ...]]:
        return [tuple(t[0] for t in layer) for layer in state]

    @torch.inference_mode()
    def step(self, ids: Tensor, state: list[tuple[Tensor, ...]]) -> tuple[Tensor, list[tuple[Tensor, ...]]]:
        """ids (B,) -> log-probabilities of the mixture (B, V), new state."""
        logits, state = super().step(ids, state)  # (K, B, V)
        return mixture_log_probs(logits), state


def stepper(model: Network, samples: int = 1) -> FastStepper | EnsembleStepper:
    """The stepper for `samples` at once from a network: a CharRNN's own, or one that mixes an ensemble's members."""
    return FastStepper(model, samples=samples) if isinstance(model, CharRNN) else EnsembleStepper(model)


def _lstm_gate_order(hidden: int) -> Tensor:
    """nn.LSTM stores gates as (i, f, g, o); the stepper wants (i, f, o, g)."""
    i, f, g, o = (torch.arange(k * hidden, (k + 1) * hidden) for k in range(4))
    return torch.cat([i, f, o, g])


def overflows_float32(model: Network, temperature: float) -> bool:
    """Whether logits / temperature could overflow float32, making softmax NaN. Once per sample, not per character
    (a test on each character's logits cost 7-14% of sampling): every feature the head reads is a hidden state
    in [-1, 1], so no logit exceeds max |bias| + sum |weights| of a row; twice that covers rounding. An ensemble's
    mixed log-probabilities lie within twice its members' largest bound plus log(V x members) of zero."""
    bound = max(2 * (m.head.weight.detach().abs().sum(1) + m.head.bias.detach().abs()).max().float().cpu()
                for m in members(model))
    if model.config.members > 1:
        bound = 2 * bound + math.log(model.config.vocab_size * model.config.members)
    return not math.isfinite((bound.reshape(1) / temperature).item())


def make_generator(random_seed: int | None, device: torch.device) -> torch.Generator:
    seed = random_seed if random_seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    return torch.Generator(device=device).manual_seed(seed)


# Seed characters per forward call: a whole seed file in one call held every layer's outputs for every character
# (2.8 GB for 200,000 characters at 2x384); in chunks the memory is bounded and short seeds are one call as before.
PRIME_CHUNK = 16_384


@torch.inference_mode()
def generate(model: Network, vocab: Vocab, seed_text: str, config: SampleConfig,
             generator: torch.Generator) -> Iterator[list[str]]:
    """Yield, per step, one new character for each of config.num_samples samples ("" once a sample has stopped).

    The seed primes the state with fused forward calls of up to PRIME_CHUNK characters; an empty seed starts
    from a newline.
    """
    device = next(model.parameters()).device
    model.eval()
    prime = seed_text or ("\n" if "\n" in vocab else vocab.chars[0])
    prime_ids = vocab.encode(prime)
    model_state = None
    for start in range(0, len(prime_ids), PRIME_CHUNK):
        chunk = torch.tensor([prime_ids[start:start + PRIME_CHUNK]], dtype=torch.long, device=device)  # (1, T)
        logits, model_state = model(chunk, model_state)
    n = config.num_samples
    state = [tuple(t.expand(-1, n, -1).contiguous() for t in layer) for layer in model_state]
    steps = stepper(model, n)
    state = steps.initial_state(state)
    logits = logits[:, -1].expand(n, -1)  # (N, V)
    active = torch.ones(n, dtype=torch.bool)
    tails = [""] * n
    longest_stop = max((len(s) for s in config.stop), default=0)
    temperature = config.temperature
    if temperature and overflows_float32(model, temperature):
        temperature = 0.0  # so small that sampling is greedy to float32's precision: its limit, without NaN
    for _ in range(config.length):
        ids = choose_next(logits, generator, temperature, config.top_k, config.top_p)  # (N,)
        chars = [vocab.chars[i] for i in ids.tolist()]
        out = []
        for k, ch in enumerate(chars):
            if not active[k]:
                out.append("")
                continue
            out.append(ch)
            if longest_stop:
                tails[k] = (tails[k] + ch)[-longest_stop:]
                if any(tails[k].endswith(s) for s in config.stop):
                    active[k] = False
        yield out
        if not active.any():
            return
        logits, state = steps.step(ids, state)
