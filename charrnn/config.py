"""Frozen configuration dataclasses, checked on construction and stored in checkpoints as plain dicts."""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import numbers
import types
import typing
from dataclasses import dataclass

from charrnn.errors import CharRNNError

LN2 = math.log(2)


def bits(nats: float) -> float:
    """A loss in nats as bits: the one place the unit changes (bits/char = nats/char / ln 2)."""
    return nats / LN2


class Cell(str, enum.Enum):
    LSTM = "lstm"
    GRU = "gru"
    RNN = "rnn"


class Device(str, enum.Enum):
    AUTO = "auto"  # cuda, then mps, then cpu: charrnn.devices.pick_device
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


class Precision(str, enum.Enum):
    AUTO = "auto"  # bf16 where the hardware computes it natively and is faster for the shape: charrnn.devices
    FP32 = "fp32"
    BF16 = "bf16"


class ValSplit(str, enum.Enum):
    SPREAD = "spread"  # pieces spread over the text (charrnn.data.Corpus.split)
    END = "end"  # the text's end


class Schedule(str, enum.Enum):
    COSINE = "cosine"
    CONSTANT = "constant"


# What a number, flag or text field accepts. Integral and Real admit numpy's scalars; bool is an int to Python
# but never a count or a rate here.
_KINDS = {int: ("a whole number", numbers.Integral), float: ("a number", numbers.Real), bool: ("True or False", bool),
          str: ("a string", str)}


@functools.cache
def _field_kinds(cls) -> dict[str, tuple[str, tuple[type, ...], bool]]:
    """Per plain field: (what it wants, the types that pass, whether None passes). Enum and tuple fields are left
    out: __post_init__ converts those, and names the choices when a value is not one of them."""
    kinds = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        plain = [arg for arg in args if arg is not type(None)]
        if all(arg in _KINDS for arg in plain):
            kinds[name] = (" or ".join(_KINDS[arg][0] for arg in plain), tuple(_KINDS[arg][1] for arg in plain),
                           type(None) in args)
    return kinds


def check_types(obj) -> None:
    """A config built from Python (charrnn.train's keywords, a SampleConfig) gets a TypeError naming the field and
    what it wants, not one from deep inside torch; the command line has converted its values already."""
    for name, (wanted, accepted, optional) in _field_kinds(type(obj)).items():
        _check(name, getattr(obj, name), wanted, accepted, optional)


def check_value(name: str, value, kind: type, *, optional: bool = False) -> None:
    """One argument of kind int, float, bool or str, checked and worded as check_types does a config's field."""
    wanted, accepted = _KINDS[kind]
    _check(name, value, wanted, (accepted,), optional)


def _check(name: str, value, wanted: str, accepted: tuple[type, ...], optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
        raise TypeError(f"{name} must be {wanted}{' or None' if optional else ''}, got {value!r}")


def choice(kind: type[enum.Enum], value, option: str):
    """`value` as a member of `kind`; anything else is an error naming the choices, as the command line's is."""
    try:
        return kind(value)
    except ValueError:
        raise CharRNNError(f"--{option} must be one of {', '.join(m.value for m in kind)}, got {value!r}") from None


def _numbers(name: str, value, whole: bool) -> tuple:
    """One number or a list of them (dynamic evaluation's per-copy settings) as a tuple."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    accepted = numbers.Integral if whole else numbers.Real
    if not all(isinstance(v, accepted) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be {'a whole number' if whole else 'a number'} or a list of them, got {value!r}")
    return values


def _random_seed(value: int | None) -> None:
    """torch's generators take seeds in [-2**63, 2**64)."""
    if value is not None and not -2**63 <= value < 2**64:
        raise CharRNNError(f"--random-seed must be between -2**63 and 2**64 - 1, got {value}")


def _positive(name: str, value: float | int | None) -> None:
    if value is not None and not 0 < value < math.inf:  # NaN fails every comparison
        finite = "" if value <= 0 else " and finite"
        raise CharRNNError(f"--{name.replace('_', '-')} must be greater than 0{finite}, got {value}")


def _zero_or_more(name: str, value: float, zero: str = "") -> None:
    """0 (meaning `zero`, e.g. "off") or a positive finite number."""
    if not 0 <= value < math.inf:
        raise CharRNNError(f"--{name.replace('_', '-')} must be 0{f' ({zero})' if zero else ''} or a positive finite number, "
                           f"got {value}")


def _plain(obj) -> dict:
    """A dataclass as a dict of plain values (enums become their strings), fit for a weights_only checkpoint."""
    return {k: (v.value if isinstance(v, enum.Enum) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(obj).items()}


def _from_plain(cls, data: dict):
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class ModelConfig:
    """The architecture: embedding → `layers` recurrent layers (Graves 2013 skips optional) → linear head."""

    vocab_size: int
    cell: Cell = Cell.LSTM
    layers: int = 2
    hidden: int = 256
    embedding: int = 64
    skip: bool = True
    dropout: float = 0.0  # on each layer's output, where it feeds the next layer and the output layer
    embedding_dropout: float = 0.0  # on the embedded input, which feeds every layer with skips
    variational: bool = False  # one dropout mask per stream and window, shared across time (Gal & Ghahramani 2016)
    weight_drop: float = 0.0  # DropConnect on each layer's hidden-to-hidden weights, one mask per step (Merity et al. 2017)
    # Networks of this shape trained side by side on the same batches, each on its own loss; the model predicts the
    # mean of their probabilities (model.Ensemble). 1: one network, as every checkpoint before session 50.
    members: int = 1

    def __post_init__(self):
        check_types(self)
        object.__setattr__(self, "cell", choice(Cell, self.cell, "cell"))
        for name in ("vocab_size", "layers", "hidden", "embedding", "members"):
            _positive(name, getattr(self, name))
        for name in ("dropout", "embedding_dropout", "weight_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CharRNNError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")

    def describe(self, upper: bool = False) -> str:
        """The shape in words: "lstm 2x256 with skips", and ", 3 members" for an ensemble."""
        cell = self.cell.value.upper() if upper else self.cell.value
        return (f"{cell} {self.layers}x{self.hidden}{' with skips' if self.skip else ''}"
                f"{f', {self.members} members' if self.members > 1 else ''}")

    def layer_input_size(self, n: int) -> int:
        """The width of recurrent layer n's input: the embedding, and with skips the layer below's output too."""
        if n == 0:
            return self.embedding
        return self.embedding + self.hidden if self.skip else self.hidden

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return _from_plain(cls, data)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: batches, optimiser, schedule, budget, validation cadence."""

    seq_len: int = 64
    batch_size: int = 32
    # Characters a stream reads in order before it moves to a segment elsewhere; each pass shuffles the segments
    # (data.StreamBatches). 0: char-rnn's layout. charrnn.plan picks it unless set.
    segment_len: int = 0
    lr: float = 1.1e-2  # with the decay to zero and weight decay below: bench/QUALITY.md, sessions 10 to 12
    schedule: Schedule = Schedule.COSINE
    warmup_steps: int = 50
    final_lr_fraction: float = 0.0
    grad_clip: float = 1.0
    weight_decay: float = 0.2  # AdamW's decoupled decay of the weight matrices (not biases)
    steps: int | None = None
    epochs: float | None = None
    minutes: float | None = None
    val_fraction: float = 0.05
    val_split: ValSplit = ValSplit.SPREAD
    val_max_chars: int = 100_000  # spread over the split; more slowed short runs badly (bench/RESULTS.md, session 3)
    eval_every: int = 100
    random_seed: int = 0
    precision: Precision = Precision.AUTO
    sample_every: int | None = None  # steps between samples shown during training (at validation points); None: off
    sample_length: int = 200
    sample_seed: str | None = None  # None: one that suits the corpus (data.suggest_seed)

    def __post_init__(self):
        check_types(self)
        object.__setattr__(self, "schedule", choice(Schedule, self.schedule, "schedule"))
        object.__setattr__(self, "precision", choice(Precision, self.precision, "precision"))
        object.__setattr__(self, "val_split", choice(ValSplit, self.val_split, "val-split"))
        for name in ("seq_len", "batch_size", "lr", "steps", "epochs", "minutes", "eval_every", "val_max_chars",
                     "sample_every", "sample_length"):
            _positive(name, getattr(self, name))
        _zero_or_more("grad_clip", self.grad_clip, "off")
        _random_seed(self.random_seed)
        if not 0.0 < self.val_fraction < 1.0:
            raise CharRNNError(f"--val-fraction must be between 0 and 1 (exclusive), got {self.val_fraction}")
        _zero_or_more("weight_decay", self.weight_decay, "off")
        if self.warmup_steps < 0:
            raise CharRNNError(f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        if self.segment_len and self.segment_len < self.seq_len:
            raise CharRNNError(f"--segment-len must be 0 (char-rnn's layout) or at least --seq-len ({self.seq_len}), "
                               f"got {self.segment_len}")

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        # Runs saved before these options validated at the end, read the text in char-rnn's layout, used plain
        # Adam and decayed to 5% of the peak learning rate: they resume as they ran.
        return _from_plain(cls, {"val_split": ValSplit.END, "segment_len": 0, "weight_decay": 0.0,
                                 "final_lr_fraction": 0.05, **data})


@dataclass(frozen=True)
class SampleConfig:
    """How to draw text from a model."""

    length: int = 1000
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    num_samples: int = 1
    random_seed: int | None = None
    stop: tuple[str, ...] = ()
    echo: bool = True
    drop_unknown: bool = False

    def __post_init__(self):
        check_types(self)
        # one string is one stop string, not a stop at each of its characters
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop) if isinstance(self.stop, (list, tuple)) else None
        if stop is None or not all(isinstance(s, str) for s in stop):
            raise TypeError(f"stop must be a string or a list of strings, got {self.stop!r}")
        object.__setattr__(self, "stop", stop)
        if self.length < 0:
            raise CharRNNError(f"--length must be 0 or more, got {self.length}")
        _zero_or_more("temperature", self.temperature, "greedy")
        if self.top_k is not None and self.top_k < 1:
            raise CharRNNError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise CharRNNError(f"--top-p must be in (0, 1], got {self.top_p}")
        _positive("num_samples", self.num_samples)
        _random_seed(self.random_seed)
        if any(s == "" for s in self.stop):
            raise CharRNNError("--stop must not be empty")


# Dynamic evaluation's default copies: (steps, windows), the first copy adapting slowly, the second fast and often.
DYNAMIC_COPIES: tuple[tuple[float, ...], tuple[int, ...]] = ((3e-4, 1.5e-3), (64, 16))
DYNAMIC_WINDOW = 64  # the window of a step a user chooses without giving one


@dataclass(frozen=True)
class EvalConfig:
    """How to score text: parallel streams for speed, optional dynamic evaluation (Krause et al. 2017)."""

    streams: int = 64
    burn_in: int = 256  # characters a stream reads, unscored, before its first scored one
    window: int = 64    # characters per forward call: the fastest measured (bench/RESULTS.md, session 3)
    strict: bool = False
    dynamic: bool = False
    # One adapting copy per step; several are scored as their fixed-share mixture. The default pair, a small step
    # every 64 characters and a larger one every 16, beat the earlier pair (3e-4 and 2.5e-3, both every 64) on 11
    # of 12 held-out texts (bench/QUALITY.md, session 28). A plain number means one step.
    dynamic_lr: tuple[float, ...] = DYNAMIC_COPIES[0]
    dynamic_share: float = 0.06  # fixed share: weight spread evenly again after each character
    # Characters between a copy's updates: one value for every copy, or one per step (normalised to one per step).
    # None: the default pair's own windows when the steps are the default pair's, else 64 for every step.
    dynamic_window: int | tuple[int, ...] | None = None
    dynamic_decay: float = 0.001  # fraction of the way back to the trained weights per update

    def __post_init__(self):
        check_types(self)
        steps = _numbers("dynamic_lr", self.dynamic_lr, whole=False)
        if not steps:
            raise CharRNNError("--dynamic-lr needs at least one step, e.g. --dynamic-lr 1e-3")
        object.__setattr__(self, "dynamic_lr", tuple(float(step) for step in steps))  # frozen: normalise once
        for step in self.dynamic_lr:
            _positive("dynamic_lr", step)
        windows = () if self.dynamic_window is None else _numbers("dynamic_window", self.dynamic_window, whole=True)
        if not windows:  # none given (None or empty)
            windows = DYNAMIC_COPIES[1] if self.dynamic_lr == DYNAMIC_COPIES[0] else (DYNAMIC_WINDOW,)
        if len(windows) == 1:
            windows *= len(steps)
        if len(windows) != len(steps):
            raise CharRNNError(f"--dynamic-window takes one value for every step or one per --dynamic-lr; "
                               f"got {len(windows)} windows for {len(steps)} steps")
        object.__setattr__(self, "dynamic_window", tuple(int(window) for window in windows))
        for window in self.dynamic_window:
            _positive("dynamic_window", window)
        for name in ("streams", "burn_in", "window"):
            _positive(name, getattr(self, name))
        for name in ("dynamic_decay", "dynamic_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise CharRNNError(f"--{name.replace('_', '-')} must be between 0 and 1, got {getattr(self, name)}")
