"""Step a model through a text one character at a time, recording surprise, top-5 guesses and cell values."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from charrnn.config import Cell, bits
from charrnn.model import Network
from charrnn.sampling import stepper
from charrnn.vocab import Vocab


@dataclass
class Trace:
    """Per position i of a text: bits[i] is the loss on text[i] (NaN for i = 0, which has no prediction),
    top[i] the 5 likeliest characters for position i with probabilities, activations[i] (L, H) the cells (an
    ensemble's first member's: each member has cells of its own)."""

    text: str
    bits: list[float]
    top: list[list[tuple[str, float]]]
    activations: Tensor  # (N, L, H)


@torch.inference_mode()
def trace(model: Network, vocab: Vocab, text: str) -> Trace:
    """Step through the text one character at a time (the sampler's stepper, which matches the fused forward)."""
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    model.eval()
    steps = stepper(model)
    state = steps.initial_state(model.initial_state(1))
    losses = [float("nan")]
    top: list[list[tuple[str, float]]] = [[]]
    acts = []
    lstm = model.config.cell is Cell.LSTM
    for i in range(len(ids)):
        logits, state = steps.step(ids[i: i + 1], state)
        # LSTM: tanh of the memory cell c (the "cell" of Karpathy et al.); GRU/RNN: the hidden state.
        acts.append(torch.stack([torch.tanh(layer[1][0]) if lstm else layer[0][0] for layer in steps.first_member(state)]))
        if i + 1 < len(ids):
            logp = logits[0].float().log_softmax(-1)
            losses.append(bits(float(-logp[ids[i + 1]])))
            p, k = logp.exp().topk(min(5, len(vocab)))
            top.append([(vocab.chars[int(c)], float(q)) for q, c in zip(p, k)])
    return Trace(text=text, bits=losses, top=top, activations=torch.stack(acts))


