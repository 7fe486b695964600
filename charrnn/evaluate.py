"""Score text with a model: nats/bits per character over parallel streams, optionally with dynamic evaluation."""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from charrnn import files, kernels
from charrnn.config import EvalConfig, Precision, bits
from charrnn.data import fingerprint_file, iter_known_ids, read_corpus
from charrnn.devices import autocast, choose_bf16
from charrnn.errors import CharRNNError
from charrnn.lanes import Lanes, lane_count
from charrnn.model import CharRNN, Network, detach_state, member_losses, members, mixture_log_probs
from charrnn.vocab import Vocab


@dataclass(frozen=True)
class EvalResult:
    """How well a model predicted a text. `to_dict()` is `charrnn eval --json`'s object."""

    nats_per_char: float
    chars: int
    seconds: float
    unknown_chars: int = 0
    static_nats_per_char: float | None = None  # with dynamic evaluation: the same text scored without adapting
    file: str | None = None  # what was scored and with which checkpoint, where known
    checkpoint: str | None = None
    # With dynamic evaluation: (step, window, nats/char) of each adapting copy alone.
    dynamic_steps: tuple[tuple[float, int, float], ...] = ()

    def to_dict(self) -> dict:
        report = {"nats_per_char": self.nats_per_char, "bits_per_char": self.bits_per_char,
                  "perplexity": self.perplexity, "chars": self.chars, "unknown_chars": self.unknown_chars,
                  "chars_per_second": self.chars_per_second, "checkpoint": self.checkpoint, "file": self.file}
        if self.static_nats_per_char is not None:
            report["static_bits_per_char"] = self.static_bits_per_char
        if self.dynamic_steps:
            report["dynamic_steps"] = [{"lr": lr, "window": window, "bits_per_char": b}
                                       for lr, window, b in self.dynamic_steps_bits_per_char]
        return report

    @property
    def bits_per_char(self) -> float:
        return bits(self.nats_per_char)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats_per_char)

    @property
    def chars_per_second(self) -> float:
        return self.chars / self.seconds if self.seconds > 0 else 0.0

    @property
    def static_bits_per_char(self) -> float | None:
        return None if self.static_nats_per_char is None else bits(self.static_nats_per_char)

    @property
    def dynamic_steps_bits_per_char(self) -> tuple[tuple[float, int, float], ...]:
        """(step, window, bits/char) of each dynamic-evaluation copy alone."""
        return tuple((lr, window, bits(nats)) for lr, window, nats in self.dynamic_steps)


def stream_layout(n: int, streams: int, burn_in: int) -> tuple[Tensor, Tensor, Tensor]:
    """Cut the n-1 (input, target) pairs of a text of n ids into rows scored in parallel.

    Row s scores targets [s·L, (s+1)·L) and first reads up to `burn_in` earlier characters unscored, so its
    hidden state starts with context instead of zeros; that costs burn_in/L extra compute and recovers most of
    what splitting loses. Returns (input_index, target_index, scored) of shape (S, burn_in + L); padding (only
    after the last scored position of a row) points at index 0 and is unscored.
    """
    pairs = n - 1
    rows = max(1, min(streams, pairs // max(1, burn_in)))  # no row shorter than its own burn-in
    length = math.ceil(pairs / rows)
    starts = torch.arange(rows).unsqueeze(1) * length  # (S, 1): first target each row scores
    # Row 0 has nothing before it, so it starts at 0 and simply reads past its scored span.
    input_index = (starts - burn_in).clamp(min=0) + torch.arange(burn_in + length)  # (S, burn_in + L)
    scored = (input_index >= starts) & (input_index < starts + length) & (input_index < pairs)
    input_index = torch.where(input_index < pairs, input_index, torch.zeros_like(input_index))  # tail padding
    return input_index, input_index + 1, scored


@torch.no_grad()
def losses_per_char(model: Network, ids: Tensor, *, config: EvalConfig = EvalConfig(), bf16: bool = False,
                    on_chars: Callable[[int], None] | None = None) -> Tensor:
    """Per-character loss in nats (float32, length len(ids) - 1): entry i is the loss on ids[i + 1]."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    input_index, target_index, scored = stream_layout(len(ids), config.streams, config.burn_in)
    flat = ids.long()
    inputs, targets = flat[input_index].to(device), flat[target_index].to(device)  # (S, W)
    out = torch.zeros(scored.shape, dtype=torch.float32, device=device)
    state = model.initial_state(inputs.shape[0], device)
    for start in range(0, inputs.shape[1], config.window):
        x, y = inputs[:, start: start + config.window], targets[:, start: start + config.window]
        with autocast(device, bf16):
            logits, state = model(x, state)
        losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        out[:, start: start + x.shape[1]] = losses.view(y.shape)
        if on_chars:
            on_chars(int(scored[:, start: start + x.shape[1]].sum()))
    model.train(was_training)
    result = torch.zeros(len(ids) - 1)
    result[(input_index[scored])] = out.cpu()[scored]
    return result


def nats_per_char(model: Network, ids: Tensor, *, config: EvalConfig = EvalConfig(), bf16: bool = False) -> tuple[float, int]:
    """(mean loss in nats, characters scored) over a text of ids; used by training for validation."""
    losses = losses_per_char(model, ids, config=config, bf16=bf16)
    return float(losses.double().mean()), len(losses)


class _AdaptingNetwork:
    """A copy of one network (one of an ensemble's members) that scores each segment with its current weights and only
    then steps on it, at one of dynamic evaluation's steps.

    The step is the gradient divided by its running RMS (Krause et al. normalise by RMS too; here it is estimated
    online, RMSprop-style), plus a decay towards the trained weights so the copy does not drift. A member steps on
    its own loss, as it trained; the copies of an ensemble's members at one step score the text by their mixture.
    """

    def __init__(self, network: CharRNN, lr: float, decay: float, window: int):
        self.network = copy.deepcopy(network).eval()  # no dropout or weight drop while adapting
        for layer in self.network.layers:
            layer.train()  # cuDNN runs a backward only through a layer in training mode; a single layer's mode
            # changes nothing else (its own dropout acts between layers)
        self.params = list(self.network.parameters())
        self.trained = [p.detach().clone() for p in self.params]
        self.mean_square: list[Tensor | None] = [None] * len(self.params)
        self.lr, self.decay, self.window = lr, decay, window
        self.state = self.network.initial_state(1, self.params[0].device)
        self.next_start = 0  # where the next segment begins

    def read_until(self, flat: Tensor, end: int) -> list[tuple[int, Tensor]]:
        """Score then step on each segment that starts before `end`: (start, logits (1, T, V) scored) of each."""
        scored = []
        while (start := self.next_start) < end:
            y = flat[start + 1: start + self.window + 1].unsqueeze(0)
            scored.append((start, self._score_then_adapt(flat[start: start + y.shape[1]].unsqueeze(0), y)))
            self.next_start = start + self.window
        return scored

    def _score_then_adapt(self, x: Tensor, y: Tensor) -> Tensor:
        logits, state = self.network(x, self.state)  # (1, T, V)
        self.network.zero_grad(set_to_none=True)
        member_losses(logits[None], y).backward()  # the mean loss: what it was trained on
        beta, eps = 0.99, 1e-8
        with torch.no_grad():
            for k, (p, p0) in enumerate(zip(self.params, self.trained)):
                if p.grad is not None:
                    g2 = p.grad.square()
                    ms = self.mean_square[k]
                    self.mean_square[k] = ms = g2 if ms is None else ms.mul_(beta).add_(g2, alpha=1 - beta)
                    p.addcdiv_(p.grad, ms.sqrt().add_(eps), value=-self.lr)
                p.add_(p0 - p, alpha=self.decay)
        self.state = detach_state(state)
        return logits.detach()


def dynamic_lanes(model: Network, networks: int, threads: int) -> int:
    """Threads for dynamic evaluation's `networks` adapting networks of `model`: for an ensemble on the CPU one each,
    up to the CPU's threads; else 1. An ensemble's members split evenly over the lanes, but one network's two
    copies do not (the one stepping every 16 characters costs more), and at two threads in turn they ran as fast or
    faster (bench/dynamic_speed.py; bench/RESULTS.md, session 59)."""
    device = next(model.parameters()).device
    return lane_count(device, networks, threads, distributed=False) if len(members(model)) > 1 else 1


def dynamic_step_losses(model: Network, ids: Tensor, *, config: EvalConfig,
                        on_chars: Callable[[int], None] | None = None) -> Tensor:
    """Dynamic evaluation (Krause et al. 2017; Graves 2013 §3.3) at each of config.dynamic_lr's steps.

    One adapting copy of the model per step, each reading the text in order as one stream: each segment of its
    window (config.dynamic_window, one per step) is scored with the copy's current weights, and only then does
    the copy step on it, so nothing ahead of the position being scored ever touches the weights. The copies
    advance together, a block of the longest window at a time. The caller's model is unchanged.
    A copy is one adapting network per member, and they are independent within a block, so on the CPU they run
    side by side on its threads (charrnn.lanes): each of their small backward passes leaves a second core idle.
    Returns (K, len(ids) - 1): row k is the per-character loss in nats at step k; entry i scores ids[i + 1].
    """
    device = next(model.parameters()).device
    copies = [[_AdaptingNetwork(member, lr, config.dynamic_decay, window) for member in members(model)]
              for lr, window in zip(config.dynamic_lr, config.dynamic_window)]
    networks = [network for networks in copies for network in networks]
    flat = ids.long().to(device)
    pairs = len(ids) - 1
    losses = torch.zeros(len(copies), pairs, device=device)  # on the device: no sync per segment on a GPU
    block = max(config.dynamic_window)
    threads = torch.get_num_threads()
    with Lanes(dynamic_lanes(model, len(networks), threads), threads) as lanes:
        for block_start in range(0, pairs, block):
            block_end = min(block_start + block, pairs)
            scored = lanes.map(functools.partial(_AdaptingNetwork.read_until, flat=flat, end=block_end), networks)
            each = len(copies[0])  # networks per step: the members
            for k in range(len(copies)):
                for segments in zip(*scored[k * each: (k + 1) * each]):  # one segment, each member's logits
                    start = segments[0][0]
                    logits = torch.stack([member_logits for _, member_logits in segments])  # (members, 1, T, V)
                    y = flat[start + 1: start + logits.shape[2] + 1].unsqueeze(0)
                    losses[k, start: start + y.shape[1]] = F.cross_entropy(
                        mixture_log_probs(logits).float().transpose(1, 2), y, reduction="none")[0]
            if on_chars:
                on_chars(block_end - block_start)
    return losses.cpu()


def fixed_share(losses: Tensor, share: float) -> Tensor:
    """Per-character loss of the fixed-share mixture (Herbster and Warmuth 1998) of K predictors' probabilities.

    losses: (K, N) nats. Each character is scored by the mixture with weights that only characters before it
    set: after each one, every weight is multiplied by the probability its predictor gave that character, then
    the fraction `share` of the total is spread evenly again, so the mixture can switch to whichever predictor
    suits the current stretch of text. With K = 1 this is the one predictor's loss.
    """
    k = losses.shape[0]
    # Log weights: a predictor far behind (weight e^-1000) still counts exactly when share is 0 (Bayes).
    log_weights, spread, out = [-math.log(k)] * k, share / k, []
    for row in losses.double().t().tolist():
        joint = [w - loss for w, loss in zip(log_weights, row)]
        top = max(joint)
        log_total = top + math.log(sum(math.exp(j - top) for j in joint))
        out.append(-log_total)
        if share:
            log_weights = [math.log((1.0 - share) * math.exp(j - log_total) + spread) for j in joint]
        else:
            log_weights = [j - log_total for j in joint]
    return torch.tensor(out, dtype=torch.float32)


def dynamic_losses_per_char(model: Network, ids: Tensor, *, config: EvalConfig,
                            on_chars: Callable[[int], None] | None = None) -> Tensor:
    """Per-character loss in nats of dynamic evaluation: the fixed-share mixture of its steps' predictions."""
    return fixed_share(dynamic_step_losses(model, ids, config=config, on_chars=on_chars), config.dynamic_share)


def evaluate_chunks(model: Network, chunks: Iterator[tuple[Tensor, int]], *, config: EvalConfig, bf16: bool = False,
                    on_chars: Callable[[int], None] | None = None, name: str = "the text") -> EvalResult:
    """Score a text that arrives in chunks of ids (bounded memory); `unknown` counts characters skipped. A text
    with nothing to score (one known character) is an error naming `name`."""
    start = time.perf_counter()
    total = total_static = 0.0
    step_totals = [0.0] * len(config.dynamic_lr)
    chars = unknown = 0
    for ids, skipped in chunks:
        unknown += skipped
        if len(ids) < 2:
            continue
        if config.dynamic:
            steps = dynamic_step_losses(model, ids, config=config, on_chars=on_chars)
            step_totals = [t + float(row.double().sum()) for t, row in zip(step_totals, steps)]
            total += float(fixed_share(steps, config.dynamic_share).double().sum())
            total_static += float(losses_per_char(model, ids, config=config, bf16=bf16).double().sum())
            chars += steps.shape[1]
        else:
            losses = losses_per_char(model, ids, config=config, bf16=bf16, on_chars=on_chars)
            total += float(losses.double().sum())
            chars += len(losses)
    seconds = time.perf_counter() - start
    if not chars:  # one known character: nothing is predicted from another
        raise CharRNNError(f"{name}: it needs at least 2 characters the model knows, since each character is scored "
                           "from those before it; pass a longer text")
    return EvalResult(
        nats_per_char=total / chars,
        chars=chars,
        seconds=seconds,
        unknown_chars=unknown,
        static_nats_per_char=total_static / chars if config.dynamic else None,
        dynamic_steps=(tuple((lr, window, t / chars) for lr, window, t in zip(config.dynamic_lr, config.dynamic_window, step_totals))
                       if config.dynamic else ()),
    )


@dataclass(frozen=True)
class TextSource:
    """What `charrnn eval` scores: a file, or (file None) the validation split of the corpus a checkpoint records."""

    file: Path | None
    corpus: dict | None = None  # the checkpoint's record of its training corpus (path, fingerprint, split)
    encoding: str = "utf-8"

    def path(self) -> Path:
        if self.file is not None:
            return files.input_file(self.file, "FILE")
        if not self.corpus or "path" not in self.corpus:
            raise CharRNNError("the checkpoint does not record its training corpus; pass a FILE to evaluate")
        return Path(self.corpus["path"])

    def size_hint(self) -> int | None:
        """Characters to score, roughly (for a progress bar); None for standard input."""
        path = self.path()
        if self.file is None:
            return int((self.corpus.get("chars") or 0) * self.corpus.get("val_fraction", 0.05))
        return None if path == files.STDIN else path.stat().st_size

    def chunks(self, vocab: Vocab, strict: bool) -> Iterator[tuple[Tensor, int]]:
        """(ids, unknown characters skipped) per chunk: a file streams in 8 MB chunks, the split is one chunk."""
        path = self.path()
        if self.file is not None:
            return iter_known_ids(path, vocab, strict=strict, encoding=self.encoding)
        if not path.is_file():
            raise CharRNNError(f"the training corpus {path} no longer exists; pass a FILE to evaluate")
        if fingerprint_file(path) != self.corpus["fingerprint"]:
            raise CharRNNError(f"the training corpus {path} has changed since training (fingerprint differs), "
                               "so its validation split is not the one held out; pass a FILE to evaluate")
        spread = self.corpus.get("val_split", "end") == "spread"  # runs saved before val_split: the end
        _, val_ids = read_corpus(path, vocab=vocab).split(self.corpus.get("val_fraction", 0.05), spread=spread)
        return iter([(val_ids, 0)])


def run(model: Network, vocab: Vocab, source: TextSource, *, config: EvalConfig = EvalConfig(),
        precision: Precision = Precision.FP32, on_chars: Callable[[int], None] | None = None) -> EvalResult:
    """Score `source` with the model; fp32 unless asked (exact, comparable across machines)."""
    device = next(model.parameters()).device
    bf16, _ = choose_bf16(precision, device, model.config, batch_size=config.streams, backward=config.dynamic)
    chunks = source.chunks(vocab, config.strict)
    kernels.keep_freed_memory(device)  # after a whole-corpus read, as in training; a FILE streams in 8 MB chunks
    result = evaluate_chunks(model, chunks, config=config, bf16=bf16, on_chars=on_chars, name=files.shown_name(source.path()))
    return replace(result, file=str(source.path()))
