"""The public Python API: train a model, load one, write text with it, score text with it.

    import charrnn
    run = charrnn.train("corpus.txt", minutes=5, out="runs/mine")
    model = charrnn.load("runs/mine")
    print(model.generate("void ", length=400, temperature=0.8, random_seed=1))
    print(model.evaluate("held_out.txt").bits_per_char)

Every command of the command line is a thin layer over these names; a server, an exporter or a notebook builds
on them too. Public: `train`, `load`, `Model`, `TrainResult`, `Progress`, `EvalResult`, `CharRNNError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from charrnn import checkpoint, corpora, devices, sampling
from charrnn.config import Device, EvalConfig, Precision, SampleConfig, TrainConfig, check_value, choice
from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalResult, TextSource
from charrnn.evaluate import run as _evaluate
from charrnn.plan import PLANNED
from charrnn.training import ModelOptions, Progress, TrainJob, TrainResult
from charrnn.training import run as _train
from charrnn.vocab import Vocab

__all__ = ["train", "load", "Model", "TrainResult", "Progress", "EvalResult", "CharRNNError", "RUNS_DIR",
           "TRAIN_OPTIONS"]

RUNS_DIR = Path("runs")  # where runs go by default, and where `load()` looks for the newest one

_MODEL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelOptions))
_CONFIG_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainConfig))
_RUN_OPTIONS = ("out", "resume", "force", "device", "threads", "encoding")
TRAIN_OPTIONS = _MODEL_OPTIONS + _CONFIG_OPTIONS + _RUN_OPTIONS  # the keyword arguments `train` takes


def _check_threads(threads: int | None) -> None:
    check_value("threads", threads, int, optional=True)
    if threads is not None and threads < 1:
        raise CharRNNError(f"--threads must be at least 1, got {threads}")


def _check_unused_training_options(options: dict) -> None:
    """Options that only shape another that is off would do nothing: an error says which to add. A resumed run
    may have that other option on, so resuming is left alone."""
    if options.get("resume"):
        return
    unused = [f"--{k.replace('_', '-')}" for k in ("sample_length", "sample_seed") if k in options]
    if unused and options.get("sample_every") is None:
        raise CharRNNError(f"{', '.join(unused)} set without --sample-every, which turns samples during training on; "
                           "add --sample-every N")
    if options.get("variational") and not (options.get("dropout") or options.get("embedding_dropout")):
        raise CharRNNError("--variational-dropout shapes the masks of --dropout and --embedding-dropout, and both are 0; "
                           "give one of them (e.g. --dropout 0.2)")


def train(corpus: str | Path | None = None, *, on_progress: Callable[[Progress], None] | None = None,
          log: Callable[[str], None] | None = None, **options) -> TrainResult:
    """Train a model on a text file or a built-in corpus ("cpp", "python"; default "cpp"); checkpoints go to
    `out` (default runs/<corpus name>). Returns when the budget is spent or on Ctrl-C (then `interrupted`).

    Options are `charrnn train`'s, as keywords with the same names and defaults: cell, layers, hidden,
    embedding, skip, dropout, embedding_dropout, variational, weight_drop, members (model); seq_len, batch_size,
    segment_len, lr, schedule, warmup_steps, grad_clip, weight_decay, steps, epochs, minutes, val_fraction,
    eval_every, random_seed, precision (training); out, resume, force, device, threads, encoding. hidden,
    weight_drop, segment_len, lr, eval_every and members that are not given (or given as None) are planned from the
    corpus size and the budget (charrnn.plan), and batch_size and seq_len not given are lowered for a text too short
    for them. `on_progress` receives a `Progress` after every step; `log` receives log lines.
    With `steps` or `epochs` the same `random_seed` gives the same weights; `minutes` follows the clock.
    `threads` holds for the run only: the process's thread count is restored when it returns.
    """
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise CharRNNError(f"unknown training option(s) {', '.join(unknown)}; the options are {', '.join(TRAIN_OPTIONS)}")
    # None for a planned option is the command line's default: plan it, as if it were not given
    options = {k: v for k, v in options.items() if not (v is None and k in PLANNED)}
    _check_threads(options.get("threads"))
    if options.get("embedding") is not None and options["embedding"] < 1:
        raise CharRNNError(f"--embedding must be greater than 0, got {options['embedding']}")
    _check_unused_training_options(options)
    path, name = corpora.resolve(None if corpus is None else str(corpus))
    model = ModelOptions(**{k: v for k, v in options.items() if k in _MODEL_OPTIONS})
    config = TrainConfig(**{k: v for k, v in options.items() if k in _CONFIG_OPTIONS})
    run_options = {k: v for k, v in options.items() if k in _RUN_OPTIONS}
    if "device" in run_options:
        run_options["device"] = choice(Device, run_options["device"], "device").value
    out = Path(run_options.pop("out", None) or RUNS_DIR / name)
    job = TrainJob(corpus_path=path, corpus_name=name, out=out, model=model, train=config,
                   explicit=frozenset(options), planned=frozenset(PLANNED) - frozenset(options), **run_options)
    return _train(job, on_progress=on_progress or (lambda p: None), log=log or (lambda s: None))


def load(path: str | Path | None = None, *, device: Device | str = Device.AUTO, threads: int | None = None,
         members: int | None = None) -> Model:
    """A trained model from a .pt file or a run directory (its best.pt, else latest.pt); with no path, the
    newest run under runs/. Loads with weights_only, so a stranger's file cannot run code. `threads` sets
    torch's CPU threads for the process (default: torch's choice), as `charrnn sample --threads` does.
    `members`: only the first that many of an ensemble's members (`Model.first_members`)."""
    _check_threads(threads)
    check_value("members", members, int, optional=True)
    if threads:
        torch.set_num_threads(threads)
    resolved = checkpoint.resolve(Path(path)) if path is not None else checkpoint.latest_run(RUNS_DIR)
    state = checkpoint.load(resolved)
    network, vocab = checkpoint.restore_model(state, devices.pick_device(device))
    model = Model(network, vocab, state, resolved)
    return model if members is None else model.first_members(members)


class Model:
    """A trained model: write text with `generate`/`stream`, score text with `evaluate`, describe it with `summary`."""

    def __init__(self, network, vocab: Vocab, state: dict, path: Path):
        self.network = network  # the CharRNN nn.Module, in eval mode
        self.vocab = vocab
        self.path = path
        self._state = state

    def __repr__(self) -> str:
        c = self.config
        return (f"<charrnn.Model {c.describe()}, "
                f"{len(self.vocab)} characters, from {self.path}>")

    @property
    def config(self):
        return self.network.config

    @property
    def name(self) -> str:
        """The run's name: its directory for a run's best.pt or latest.pt, else the file's stem."""
        return self.path.parent.name if self.path.stem in ("best", "latest") else self.path.stem

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def summary(self) -> dict:
        """What `charrnn info --json` prints: configuration, vocabulary, training progress, loss history."""
        return checkpoint.summarize(self.path, self._state)

    def prepare_seed(self, seed: str, *, drop_unknown: bool = False) -> str:
        """The seed as the model reads it: an unknown character is an error, or dropped with drop_unknown."""
        check_value("seed", seed, str)
        check_value("drop_unknown", drop_unknown, bool)  # 1 or "no" would pass as truthy
        prepared = self.vocab.decode(self.vocab.encode(seed, drop_unknown=drop_unknown))
        if seed and not prepared:
            raise CharRNNError("every character of the seed is unknown to the model; give a seed in the corpus's alphabet")
        return prepared

    def stream_samples(self, seed: str = "", *, num_samples: int = 1, length: int = 1000, temperature: float = 0.8,
                       top_k: int | None = None, top_p: float | None = None, random_seed: int | None = None,
                       stop: str | tuple[str, ...] | list[str] = (), drop_unknown: bool = False) -> Iterator[list[str]]:
        """Per step, the next character of each of `num_samples` samples drawn together ("" once one has
        stopped at a `stop` string). The seed itself is not repeated. Temperature 0 is greedy."""
        config = SampleConfig(length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                              num_samples=num_samples, random_seed=random_seed, stop=stop)
        seed_text = self.prepare_seed(seed, drop_unknown=drop_unknown)
        generator = sampling.make_generator(random_seed, self.device)
        return sampling.generate(self.network, self.vocab, seed_text, config, generator)

    def stream(self, seed: str = "", **options) -> Iterator[str]:
        """The continuation of `seed`, a character at a time, as it is made. Options as in `generate`."""
        for chars in self.stream_samples(seed, **options):
            if chars[0]:
                yield chars[0]

    def generate(self, seed: str = "", *, length: int = 1000, temperature: float = 0.8, top_k: int | None = None,
                 top_p: float | None = None, random_seed: int | None = None, stop: str | tuple[str, ...] | list[str] = (),
                 drop_unknown: bool = False, echo: bool = True) -> str:
        """`length` characters after `seed` (the seed first, unless echo=False), as `charrnn sample` prints them.
        The same random_seed and options give the same text."""
        check_value("echo", echo, bool)
        text = "".join(self.stream(seed, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                                   random_seed=random_seed, stop=stop, drop_unknown=drop_unknown))
        return (self.prepare_seed(seed, drop_unknown=drop_unknown) if echo else "") + text

    def text_source(self, file: str | Path | None = None, *, encoding: str = "utf-8") -> TextSource:
        """What `evaluate` scores: `file`, or with None the held-out validation text of the corpus the model trained on
        (a built-in corpus is assembled again if its cached file is gone)."""
        corpus = self._state.get("corpus")
        if file is None and corpus and corpus.get("path") and not Path(corpus["path"]).exists():
            rebuilt = corpora.rebuilt(Path(corpus["path"]))
            corpus = {**corpus, "path": str(rebuilt)} if rebuilt else corpus
        return TextSource(None if file is None else Path(file), corpus, encoding)

    def evaluate(self, file: str | Path | TextSource | None = None, *, dynamic: bool = False,
                 dynamic_lr: float | Sequence[float] = EvalConfig.dynamic_lr, dynamic_share: float = EvalConfig.dynamic_share,
                 dynamic_window: int | Sequence[int] | None = None, dynamic_decay: float = EvalConfig.dynamic_decay,
                 streams: int = 64, strict: bool = False,
                 precision: Precision | str = Precision.FP32, encoding: str = "utf-8",
                 on_chars: Callable[[int], None] | None = None) -> EvalResult:
        """How well the model predicts `file` (default: its own held-out validation text): nats and bits per character,
        perplexity. Unknown characters are skipped and counted (or an error with strict). dynamic=True adapts
        the weights to the text already scored (Krause et al. 2017): one adapting copy per step in dynamic_lr,
        each updating every dynamic_window characters (one value for all, or one per step; None: the default
        pair's own, else 64), their predictions mixed by fixed share. `to_dict()` gives `charrnn eval --json`."""
        config = EvalConfig(streams=streams, strict=strict, dynamic=dynamic, dynamic_lr=dynamic_lr, dynamic_share=dynamic_share,
                            dynamic_window=dynamic_window, dynamic_decay=dynamic_decay)
        unused = [name for name, given in (("--dynamic-lr", config.dynamic_lr != EvalConfig.dynamic_lr),
                                           ("--dynamic-window", dynamic_window is not None),
                                           ("--dynamic-share", dynamic_share != EvalConfig.dynamic_share),
                                           ("--dynamic-decay", dynamic_decay != EvalConfig.dynamic_decay)) if given]
        if unused and not dynamic:  # a static score must not pass for the dynamic one the options describe
            raise CharRNNError(f"{', '.join(unused)} set without --dynamic, which they tune; add --dynamic")
        source = file if isinstance(file, TextSource) else self.text_source(file, encoding=encoding)
        result = _evaluate(self.network, self.vocab, source, config=config, precision=choice(Precision, precision, "precision"),
                           on_chars=on_chars)
        return dataclasses.replace(result, checkpoint=str(self.path))

    def suggested_seed(self) -> str:
        """A seed that suits the training corpus (its natural opening, or the first word of its first line)."""
        from charrnn.data import suggest_seed

        corpus = self._state.get("corpus") or {}
        return suggest_seed(corpus.get("name", ""), Path(corpus["path"]) if corpus.get("path") else None)

    def first_members(self, k: int) -> Model:
        """This model with only the first `k` of its ensemble's members, mixed as all of them are: k/K of the work
        per character and of an exported page's size, for a score a little worse (`evaluate` measures it). The
        run's validation score was the whole ensemble's, so the smaller model has none."""
        check_value("members", k, int)
        total = self.config.members
        if not 1 <= k <= total:
            has = f"has {total} members; give 1 to {total}" if total > 1 else "is one network, not an ensemble; give 1"
            raise CharRNNError(f"--members {k}: this model {has}")
        if k == total:
            return self
        state = checkpoint.first_members(self._state, k)
        network, vocab = checkpoint.restore_model(state, self.device)
        return Model(network, vocab, state, self.path)

    def rounded(self, weights: str) -> Model:
        """This model with its weights rounded as an exported page holds them ("fp32", "fp16" or "int8"), to
        score or sample exactly what the page computes."""
        from charrnn.export import rounded_state_dict

        network, vocab = checkpoint.restore_model(self._state, self.device)
        network.load_state_dict(rounded_state_dict(self.network, weights))
        return Model(network, vocab, self._state, self.path)

    def export_html(self, *, weights: str = "int8", seed: str | None = None, title: str | None = None) -> str:
        """This model as one self-contained web page that writes text in the browser: no network, works when
        opened from disk. `weights`: "int8" (default, one scale per row), "fp16" or "fp32"."""
        from charrnn import export

        check_value("seed", seed, str, optional=True)
        check_value("title", title, str, optional=True)
        summary = self.summary()
        c, corpus = self.config, summary.get("corpus") or {}
        name = title or f"charrnn · {self.name}"
        best = summary.get("best_val_bits_per_char")
        about = {"name": name, "model": c.describe(upper=True),
                 "parameters": f"{summary['parameters']:,}", "corpus": corpus.get("name", "?"),
                 "validation": f"{best:.3f} bits/char" if best is not None else "n/a",
                 "characters": f"{len(self.vocab)}", "weights": weights}
        return export.page(self.network, self.vocab, title=name, about=about,
                           seed_text=self.suggested_seed() if seed is None else seed, weights=weights)

    def trace(self, text: str, *, drop_unknown: bool = False):
        """Step the model through `text`: per character its surprise in bits, the top-5 guesses, every cell's
        value (a `charrnn.visualize.trace.Trace`, which `charrnn show` renders)."""
        from charrnn.visualize.trace import trace

        check_value("text", text, str)
        check_value("drop_unknown", drop_unknown, bool)
        text = self.vocab.decode(self.vocab.encode(text, drop_unknown=drop_unknown))
        if len(text) < 2:
            raise CharRNNError("the text needs at least 2 characters the model knows to show anything")
        return trace(self.network, self.vocab, text)
