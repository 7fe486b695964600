"""The training loop: streams of the corpus, truncated BPTT, schedule, validation, checkpoints, exact resume.

`run(job)` sets a run up (`_set_up`: corpus, model, optimiser, resumed state, arithmetic) and then runs `_loop`,
which reads in one sitting. Everything that changes from step to step is one `RunState`, which is also what a
checkpoint holds besides the weights and the optimiser.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from charrnn import checkpoint, distributed, files, kernels, plan, sampling
from charrnn.config import Cell, ModelConfig, Precision, SampleConfig, Schedule, TrainConfig, ValSplit, bits, check_types, choice
from charrnn.data import Corpus, StreamBatches, fit_windows, read_corpus, spread_sample, suggest_seed
from charrnn.devices import bf16_fault, choose_bf16, has_amx, has_native_bf16, odd_width_warning, pick_device, threads_warning, usable_cpus
from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalConfig, losses_per_char
from charrnn.lanes import Lanes, lane_count, step_in_turn
from charrnn.model import Ensemble, Network, State, build, detach_state, pad_embedding_column, with_even_embedding

DEFAULT_MINUTES = 10.0  # the budget when none of --steps, --epochs, --minutes is given


# With skips the embedded input feeds every layer, so its width costs every layer's input product; past about
# 128 characters (the rarer ones of a large alphabet) one dimension each buys less than the steps it costs
# (bench/QUALITY.md, session 32).
EMBEDDING_CAP = 128


def default_embedding(vocab_size: int) -> int:
    """The alphabet's size (one-hot equivalent) rounded up to even, at most EMBEDDING_CAP: oneDNN's bf16 kernels
    on a CPU with AMX take an odd input width on a path 1.7-1.8 times slower per step (bench/RESULTS.md, session 32)."""
    return min(vocab_size + vocab_size % 2, EMBEDDING_CAP)


@dataclass(frozen=True)
class ModelOptions:
    """Architecture choices from the command line; the vocabulary size comes from the corpus."""

    cell: Cell = Cell.LSTM
    layers: int = 2
    hidden: int = 256
    embedding: int | None = None  # None: default_embedding(vocabulary size)
    skip: bool = True
    dropout: float = 0.0
    embedding_dropout: float = 0.0
    variational: bool = False
    weight_drop: float = 0.0
    members: int = 1

    def __post_init__(self):
        check_types(self)
        object.__setattr__(self, "cell", choice(Cell, self.cell, "cell"))

    def for_vocab(self, vocab_size: int) -> ModelConfig:
        embedding = self.embedding or default_embedding(vocab_size)
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, layers=self.layers, hidden=self.hidden,
                           embedding=embedding, skip=self.skip, dropout=self.dropout,
                           embedding_dropout=self.embedding_dropout, variational=self.variational,
                           weight_drop=self.weight_drop, members=self.members)


@dataclass(frozen=True)
class TrainJob:
    corpus_path: Path
    corpus_name: str
    out: Path
    model: ModelOptions = ModelOptions()
    train: TrainConfig = TrainConfig()
    explicit: frozenset[str] = frozenset()  # option names the user set; on --resume they override the checkpoint
    planned: frozenset[str] = frozenset()  # settings charrnn.plan chooses for a new run (api.train: those not given)
    resume: bool = False
    force: bool = False
    device: str = "auto"
    threads: int | None = None
    encoding: str = "utf-8"


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int | None
    epoch: float
    train_nats: float
    val_bits: float | None
    chars_per_second: float
    elapsed: float
    fraction_done: float
    lr: float


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    seconds: float
    best_val_bits: float | None
    last_val_bits: float | None
    parameters: int
    interrupted: bool = False
    history: dict = field(default_factory=dict)
    main_process: bool = True  # under torchrun, only rank 0 reports
    processes: int = 1  # torchrun's world size


@dataclass
class RunState:
    """What changes from step to step, and all of it a checkpoint keeps besides weights and optimiser state."""

    step: int = 0
    elapsed_seconds: float = 0.0  # training time in earlier sessions of this run (resumed), plus this one's
    best_val_nats: float = math.inf
    # train: [step, nats]; val: [step, nats, seconds]; samples (with --sample-every): [step, text, seconds taken]
    history: dict = field(default_factory=lambda: {"train": [], "val": [], "samples": []})
    hidden: State | None = None  # this rank's streams' recurrent state

    @property
    def last_val_bits(self) -> float | None:
        return bits(self.history["val"][-1][1]) if self.history["val"] else None

    def to_checkpoint(self, hidden_all_ranks: list[list[torch.Tensor]]) -> dict:
        return {"step": self.step, "elapsed_seconds": self.elapsed_seconds, "best_val_nats": self.best_val_nats,
                "rng": {"torch": torch.get_rng_state()}, "hidden": hidden_all_ranks, "history": self.history}

    @classmethod
    def from_checkpoint(cls, saved: dict, rows: slice, batch_size: int, device: torch.device) -> RunState:
        """The state a checkpoint recorded, with this rank's `rows` of the hidden state (any world size), and the
        random stream where it was; hidden states saved at another batch size start again from zeros. They come
        back in fp32, as a new run's zeros are: a bf16 run saves them in bf16, which an fp32 run's LSTM refuses
        (--resume --precision fp32), and autocast casts them back to bf16 exactly."""
        torch.set_rng_state(saved["rng"]["torch"])
        hidden = None
        if saved.get("hidden") and saved["hidden"][0][0].shape[1] == batch_size:
            hidden = [tuple(t[:, rows].to(device=device, dtype=torch.float32) for t in layer) for layer in saved["hidden"]]
        return cls(step=int(saved["step"]), elapsed_seconds=float(saved.get("elapsed_seconds", 0.0)),
                   best_val_nats=float(saved.get("best_val_nats", math.inf)),
                   history={"train": list(saved["history"]["train"]), "val": list(saved["history"]["val"]),
                            "samples": list(saved["history"].get("samples", []))},
                   hidden=hidden)


@dataclass
class Run:
    """A run once set up: what the loop works with, fixed for its length."""

    job: TrainJob
    out: Path
    ctx: distributed.Context
    corpus: Corpus
    model_config: ModelConfig
    config: TrainConfig
    model: Network
    wrapped: torch.nn.Module  # the model, or DDP around it under torchrun
    optimizer: torch.optim.Optimizer
    batches: StreamBatches
    val_ids: torch.Tensor
    bf16: bool
    arithmetic: str  # what the log says of bf16
    total_steps: int | None
    budget_seconds: float | None
    first_step: int  # where this session started (a resumed run's step)
    sample_seed: str  # what samples during training start from (--sample-seed, or one that suits the corpus)
    plan_note: str  # what charrnn.plan chose for this run, for the log and the checkpoint
    log: Callable[[str], None]
    threads: int = 1  # the CPU threads the run uses

    @property
    def device(self) -> torch.device:
        return self.ctx.device

    @property
    def lanes(self) -> int:
        """The threads an ensemble's members step on side by side (charrnn.lanes); 1: in turn."""
        return lane_count(self.device, self.model_config.members, self.threads, self.ctx.enabled)

    def fraction_done(self, step: int, elapsed: float) -> float:
        """How much of the budget is spent: steps, or clock time with --minutes, whichever is further along."""
        parts = [step / self.total_steps] if self.total_steps else []
        if self.budget_seconds:
            parts.append(elapsed / self.budget_seconds)
        return max(parts) if parts else 0.0


def _adam(model: torch.nn.Module, lr: float, device: torch.device, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW (Adam when weight_decay is 0), fused into one kernel where torch has one for the device (several
    times faster than foreach on the CPU: bench/RESULTS.md, session 2). Decay applies to weight matrices only."""
    params = list(model.parameters())
    matrices, others = _matrices_and_others(params)
    groups = [{"params": [params[i] for i in matrices], "weight_decay": weight_decay},
              {"params": [params[i] for i in others], "weight_decay": 0.0}]
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), fused=True)
        except (RuntimeError, ValueError):  # an older torch without the fused CPU kernel
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def _matrices_and_others(params: list[torch.Tensor]) -> tuple[list[int], list[int]]:
    """Indices of the weight matrices (decayed) and of the rest (biases: not decayed), in parameter order."""
    matrices = [i for i, p in enumerate(params) if p.dim() >= 2]
    return matrices, [i for i, p in enumerate(params) if p.dim() < 2]


def _two_groups(saved: dict, model: torch.nn.Module) -> dict:
    """An optimiser state saved before weight decay (one group over model.parameters() in order) as _adam's
    two groups (matrices, then the rest), so that older runs resume; a two-group state passes unchanged."""
    if len(saved["param_groups"]) != 1:
        return saved
    matrices, others = _matrices_and_others(list(model.parameters()))
    order = matrices + others  # position in _adam's groups -> index in the saved single group
    group = saved["param_groups"][0]
    groups = [{**group, "params": list(range(len(matrices)))}, {**group, "params": list(range(len(matrices), len(order)))}]
    return {"state": {new: saved["state"][old] for new, old in enumerate(order) if old in saved["state"]},
            "param_groups": groups}


def _pad_moments(optimizer: torch.optim.Optimizer, model: Network, saved: ModelConfig) -> None:
    """Adam's moments of a checkpoint whose odd embedding was padded (model.with_even_embedding), padded alike; the
    zero column's moments are zero, as if the column had always been there."""
    if saved.embedding == model.config.embedding:
        return
    for name, parameter in model.named_parameters():
        moments = optimizer.state.get(parameter, {})
        for key, value in moments.items():
            if torch.is_tensor(value) and value.dim() == parameter.dim() and value.shape != parameter.shape:  # not 'step'
                moments[key] = pad_embedding_column(name, value, saved)


def _choose_bf16(precision: Precision, model_config: ModelConfig, batch_size: int, device: torch.device,
                 resumed_bf16: bool | None) -> tuple[bool, str]:
    """bf16 autocast or not, and why, by charrnn.devices' rule: a pure function of the hardware and the
    shapes, never of a timing. A resumed `auto` run keeps the arithmetic it ran in (where the hardware still
    runs it), so that it resumes exactly even if the rule changed since."""
    if precision is Precision.AUTO and resumed_bf16 is not None:
        if not resumed_bf16 or bf16_fault(device, model_config) is None:
            return resumed_bf16, f"{'bf16 autocast' if resumed_bf16 else 'fp32'} (auto: as before resuming)"
    return choose_bf16(precision, device, model_config, batch_size=batch_size)


def lr_at(step: int, config: TrainConfig, fraction_done: float) -> float:
    """Linear warm-up, then (cosine) decay to final_lr_fraction × lr as the budget runs out."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule is Schedule.CONSTANT:
        return config.lr
    f = config.final_lr_fraction
    return config.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction_done))))


def _budget_note(config: TrainConfig, total_steps: int | None) -> str:
    """The budget for the first log line, saying plainly whether the run repeats exactly."""
    steps = f"{total_steps:,} step{'s' if total_steps != 1 else ''}" if total_steps else ""
    if not config.minutes:
        return f"budget {steps} (the same seed repeats this run exactly)"
    if not steps:
        return (f"budget {config.minutes:g} min of wall clock (the clock sets the last step and the learning-rate decay, "
                "so runs differ; --steps or --epochs repeat exactly)")
    # the decay follows whichever of the two is further along (Run.fraction_done): the steps, unless the clock gets ahead
    return (f"budget {config.minutes:g} min of wall clock or {steps}, whichever ends first (the same seed repeats this "
            "run exactly unless the clock gets ahead of the steps, as on a slower machine; --steps or --epochs always do)")


class _StopRequest:
    """Ctrl-C sets a flag; the loop saves at the next step boundary. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread (e.g. some test runners): no handler, default behaviour
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _resolve_out(job: TrainJob) -> Path:
    out = job.out
    if job.resume:
        if not (out / checkpoint.LATEST).is_file():
            raise CharRNNError(f"--resume: {out / checkpoint.LATEST} does not exist; train into {out} first, or drop --resume")
        return out
    if (out / checkpoint.LATEST).exists() and not job.force:
        raise CharRNNError(f"{out} already holds a run; pass --resume to continue it, --force to overwrite it, "
                           "or --out for a new run directory")
    return out


def _merge_on_resume(job: TrainJob, state: dict) -> tuple[ModelConfig, TrainConfig]:
    model_config = ModelConfig.from_dict(state["model_config"])
    for name in ("cell", "layers", "hidden", "embedding", "skip", "members"):
        if name in job.explicit:
            wanted = getattr(job.model, name)
            have = getattr(model_config, name)
            if name == "embedding" and wanted % 2 and have == wanted + 1:
                continue  # the odd width asked for, padded with a zero column at an earlier resume
            if wanted != have:
                if isinstance(wanted, bool):  # --skip / --no-skip
                    given, saved = (f"--{'' if v else 'no-'}{name}" for v in (wanted, have))
                    raise CharRNNError(f"--resume: {given} differs from the checkpoint's {saved}; drop {given} to continue the run")
                raise CharRNNError(f"--resume: --{name} {getattr(wanted, 'value', wanted)} differs from the checkpoint's "
                                   f"{getattr(have, 'value', have)}; drop --{name} to continue the run")
    for name in ("dropout", "embedding_dropout", "variational", "weight_drop"):
        if name in job.explicit:
            model_config = replace(model_config, **{name: getattr(job.model, name)})
    try:
        saved = TrainConfig.from_dict(state["train_config"])
    except TypeError as e:  # a value the API once let through (steps=2.5) that the checks now refuse
        raise CharRNNError(f"--resume: the checkpoint's training settings are not valid ({e}); "
                           "start a new run with --force or another --out") from None
    for name in ("val_fraction", "val_split", "segment_len"):  # they decide which text trains next: a resumed run keeps it
        if name in job.explicit and getattr(job.train, name) != getattr(saved, name):
            raise CharRNNError(f"--resume: --{name.replace('_', '-')} differs from the checkpoint's "
                               f"({getattr(getattr(saved, name), 'value', getattr(saved, name))}); drop it to continue the run")
    overrides = {name: getattr(job.train, name) for name in job.explicit if hasattr(saved, name)}
    if {"steps", "epochs", "minutes"} & job.explicit:  # a new budget replaces the old one entirely
        overrides = {"steps": None, "epochs": None, "minutes": None, **overrides}
    return model_config, replace(saved, **overrides)


def run(job: TrainJob, *, on_progress: Callable[[Progress], None] = lambda p: None,
        log: Callable[[str], None] = lambda s: None) -> TrainResult:
    """Train as `job` says; checkpoints go to job.out. Under torchrun every rank calls this."""
    ctx = distributed.init(pick_device(job.device))
    threads_before = torch.get_num_threads()  # a run's --threads is the run's: a Python caller's later work keeps its own
    try:
        if job.threads:
            torch.set_num_threads(job.threads)
        created = files.missing_folders(job.out)
        files.output_dir(job.out, "--out")
        lock = checkpoint.RunLock(job.out, created=created) if ctx.is_main else None  # first: a concurrent run is told so
        if lock:
            lock.__enter__()
        try:
            out = _resolve_out(job)
            if ctx.is_main:
                checkpoint.remove_stray_temporaries(out)
            run_, state = _set_up(job, out, ctx, log)
            if ctx.is_main:
                log(_first_log_line(run_))
                bf16_on_cpu = run_.bf16 and run_.device.type == "cpu"
                for warning in (threads_warning(job.threads), odd_width_warning(run_.model_config, bf16_on_cpu)):
                    if warning:
                        log(warning)
            return _loop(run_, state, on_progress)
        finally:
            if lock:
                lock.__exit__(None, None, None)
    finally:
        torch.set_num_threads(threads_before)
        distributed.cleanup()


def _set_up(job: TrainJob, out: Path, ctx: distributed.Context, log: Callable[[str], None]) -> tuple[Run, RunState]:
    """Read the corpus, build the model and optimiser (from the checkpoint when resuming), pick the arithmetic."""
    resumed = checkpoint.load(out / checkpoint.LATEST) if job.resume else None
    if resumed is not None:
        from charrnn.vocab import Vocab

        corpus = read_corpus(job.corpus_path, name=job.corpus_name, encoding=job.encoding,
                             vocab=Vocab.from_list(resumed["vocab"]))
        if corpus.fingerprint != resumed["corpus"]["fingerprint"] and not job.force:
            raise CharRNNError(f"--resume: {job.corpus_path} is not the corpus this run trained on "
                               f"({resumed['corpus']['path']}); its text differs, pass --force to continue on it anyway")
        saved_config, config = _merge_on_resume(job, resumed)
        model_config, resumed_weights = with_even_embedding(saved_config, resumed["model"])
        plan_note = resumed.get("plan", "settings as the checkpoint recorded them")
    else:
        corpus = read_corpus(job.corpus_path, name=job.corpus_name, encoding=job.encoding)
        config = job.train
    if not (config.steps or config.epochs or config.minutes):
        config = replace(config, minutes=DEFAULT_MINUTES)
    train_ids, val_ids = corpus.split(config.val_fraction, spread=config.val_split is ValSplit.SPREAD)
    threads = min(torch.get_num_threads(), usable_cpus())  # the count the plan assumes; more add no speed
    if resumed is None:
        model_config, config, plan_note = _planned(job, config, len(corpus.vocab), len(train_ids), ctx, threads)
    device = ctx.device

    torch.manual_seed(config.random_seed)
    model = build(model_config).to(device)
    batches = StreamBatches(train_ids, config.batch_size, config.seq_len, segment_len=config.segment_len,
                            seed=config.random_seed, rank=ctx.rank, world_size=ctx.world_size)
    # From here on each step reuses the last step's memory; turned on after the corpus is read so that its
    # temporaries still go back to the OS. Not under torchrun: a gloo rank aborted once at exit with it (CI).
    if not ctx.enabled:
        kernels.keep_freed_memory(device)
    optimizer = _adam(model, config.lr, device, config.weight_decay)
    state = RunState()
    if resumed is not None:
        model.load_state_dict(resumed_weights)
        fused = optimizer.param_groups[0].get("fused")
        optimizer.load_state_dict(_two_groups(resumed["optimizer"], model))
        _pad_moments(optimizer, model, saved_config)
        for group in optimizer.param_groups:
            group["decoupled_weight_decay"] = True  # a state saved by plain Adam says False
            group["fused"] = fused  # the saved flag names the device it was saved on, not this one
        rows = slice(ctx.rank * batches.batch_size, (ctx.rank + 1) * batches.batch_size)
        state = RunState.from_checkpoint(resumed, rows, config.batch_size, device)
    for group, decay in zip(optimizer.param_groups, (config.weight_decay, 0.0)):
        group["lr"] = config.lr
        group["weight_decay"] = decay  # a resumed run may change it with --weight-decay
    bf16, arithmetic = _choose_bf16(config.precision, model_config, batches.batch_size, device,
                                    resumed.get("bf16") if resumed is not None else None)
    wrapped = model
    if ctx.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    total_steps = config.steps
    if config.epochs is not None:
        epoch_steps = math.ceil(config.epochs * batches.windows_per_epoch)
        total_steps = min(total_steps, epoch_steps) if total_steps else epoch_steps
    return Run(job=job, out=out, ctx=ctx, corpus=corpus, model_config=model_config, config=config, model=model,
               wrapped=wrapped, optimizer=optimizer, batches=batches,
               val_ids=spread_sample(val_ids, config.val_max_chars), bf16=bf16, arithmetic=arithmetic,
               total_steps=total_steps, budget_seconds=config.minutes * 60 if config.minutes else None,
               first_step=state.step, log=log, plan_note=plan_note,
               threads=threads,
               sample_seed=config.sample_seed if config.sample_seed is not None else suggest_seed(corpus.name, corpus.path),
               ), state


def _planned(job: TrainJob, config: TrainConfig, vocab_size: int, train_chars: int,
             ctx: distributed.Context, threads: int) -> tuple[ModelConfig, TrainConfig, str]:
    """A new run's model and training settings: what the user set, and charrnn.plan's choice for the rest."""
    options = job.model
    chosen = tuple(name for name in plan.PLANNED if name in job.planned)
    batch_size, seq_len = fit_windows(train_chars, config.batch_size, config.seq_len, lower_batch="batch_size" in chosen,
                                      lower_seq_len="seq_len" in chosen, processes=ctx.world_size)
    fitted = (f"--batch-size {batch_size}" * (batch_size != config.batch_size),
              f"--seq-len {seq_len}" * (seq_len != config.seq_len))
    fitted_note = (f"; {' and '.join(filter(None, fitted))}, since {config.batch_size} windows of {config.seq_len + 1} "
                   f"characters do not fit the {train_chars:,} training characters") if any(fitted) else ""
    config = replace(config, batch_size=batch_size, seq_len=seq_len)
    # a CPU class's figure counts its arithmetic: one told to train in fp32 plans as an fp32 CPU (on a Xeon with AMX
    # 2x1024 stepped 1.5-2.2 times slower in fp32 than in bf16: bench/RESULTS.md, session 43)
    native_bf16 = has_native_bf16(ctx.device)
    as_fp32 = native_bf16 and ctx.device.type == "cpu" and config.precision is Precision.FP32
    device_class = plan.device_class(ctx.device.type, native_bf16=native_bf16 and not as_fp32, amx=has_amx())
    flops = plan.nominal_flops(device_class, threads=threads, processes=ctx.world_size)
    counts_bf16 = device_class in plan.BF16_CLASSES  # never under --precision fp32, which plans as `cpu` above

    def at_full_speed(width: int) -> bool:  # a width whose bf16 gradients are wrong here trains in fp32
        return not counts_bf16 or bf16_fault(ctx.device, replace(options, hidden=width).for_vocab(vocab_size)) is None

    planned = plan.plan(corpus_chars=train_chars, flops=flops,
                        budget=plan.Budget(steps=config.steps, epochs=config.epochs, minutes=config.minutes),
                        vocab_size=vocab_size, layers=options.layers, embedding=options.for_vocab(vocab_size).embedding,
                        skip=options.skip, cell=options.cell, batch_chars=config.batch_size * config.seq_len,
                        seq_len=config.seq_len,
                        hidden=None if "hidden" in chosen else options.hidden,
                        segment_len=None if "segment_len" in chosen else config.segment_len,
                        members=None if "members" in chosen else options.members,
                        lanes=lane_count(ctx.device, plan.MAX_MEMBERS, threads, ctx.enabled),
                        at_full_speed=at_full_speed)
    options = replace(options, **{name: getattr(planned, name) for name in ("hidden", "weight_drop", "members")
                                  if name in chosen})
    config = replace(config, **{name: getattr(planned, name) for name in ("segment_len", "lr", "eval_every") if name in chosen})
    if "epochs" in chosen and planned.max_epochs:  # a clock budget longer than the text can use
        config = replace(config, epochs=planned.max_epochs)
    note = planned.describe(chosen) + fitted_note
    if config.minutes and chosen:
        note += (f" (minutes planned at a nominal {flops / 1e9:,.0f} GFLOP/s: {device_class}"
                 f"{' for --precision fp32' if as_fp32 else ''}, {threads} thread{'s' * (threads > 1)})")
    return options.for_vocab(vocab_size), config, note


def _first_log_line(run: Run) -> str:
    c, m, ctx = run.corpus, run.model_config, run.ctx
    resuming = f"resuming {run.out} at step {run.first_step}; " if run.first_step else ""
    return (f"{resuming}corpus {c.name}: {len(c.ids):,} chars, {len(c.vocab)} distinct; "
            f"model {m.describe()}, "
            f"{run.model.parameter_count():,} parameters; device {run.device}"
            f"{f' x {ctx.world_size} processes' if ctx.enabled else ''}, {run.arithmetic}"
            f"{f', members stepped {run.lanes} at a time' if run.lanes > 1 else ''}; "
            f"{_budget_note(run.config, run.total_steps)}; {run.plan_note}")


def _loop(run: Run, state: RunState, on_progress: Callable[[Progress], None]) -> TrainResult:
    """The loop: a window of every stream per step, state carried across windows (truncated BPTT)."""
    config, model, batches, ctx = run.config, run.model, run.batches, run.ctx
    diverged_nats = 3 * math.log(run.model_config.vocab_size) + 1  # uniform guessing scores ln(V)
    state.hidden = state.hidden or model.initial_state(batches.batch_size, run.device)
    start, elapsed_before = time.perf_counter(), state.elapsed_seconds
    clock = lambda: elapsed_before + time.perf_counter() - start  # noqa: E731
    interrupted = False
    model.train()
    lanes = Lanes(run.lanes, run.threads) if run.lanes > 1 else None
    with _StopRequest() as stop, lanes or contextlib.nullcontext():
        while True:
            elapsed = clock()
            done = run.fraction_done(state.step, elapsed) >= 1.0
            if distributed.any_rank(done or stop.requested, ctx):
                interrupted = stop.requested and not done
                break
            if batches.starts_segment(state.step):
                state.hidden = model.initial_state(batches.batch_size, run.device)  # the streams start new text
            lr = lr_at(state.step, config, run.fraction_done(state.step, elapsed))
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            x, y = (t.to(run.device, non_blocking=True) for t in batches.window(state.step))  # (B, T) each
            loss, state.hidden = _forward_backward(run, lanes, x, y, state.hidden)
            loss_nats = loss.item() / run.model_config.members  # a member's mean
            if distributed.any_rank(not loss_nats <= diverged_nats, ctx):  # NaN fails every comparison
                _diverged(run, state.step + 1, loss_nats)
            run.optimizer.step()
            state.hidden = detach_state(state.hidden)
            state.step += 1
            state.elapsed_seconds = clock()
            state.history["train"].append([state.step, loss_nats])
            if state.step % config.eval_every == 0 or run.fraction_done(state.step, state.elapsed_seconds) >= 1.0:
                val_nats = _validate(run)
                state.history["val"].append([state.step, val_nats, state.elapsed_seconds])
                state.best_val_nats = min(state.best_val_nats, val_nats)
                if config.sample_every and ctx.is_main and _sample_due(state, config.sample_every):
                    _sample(run, state)
                _save(run, state, val_nats)
            if ctx.is_main:
                on_progress(_progress(run, state, loss_nats, lr, time.perf_counter() - start))
        if interrupted or not state.history["val"] or state.history["val"][-1][0] != state.step:
            state.elapsed_seconds = clock()
            _save(run, state, None)
    return TrainResult(run_dir=run.out, steps=state.step, seconds=clock(),
                       best_val_bits=bits(state.best_val_nats) if math.isfinite(state.best_val_nats) else None,
                       last_val_bits=state.last_val_bits, parameters=model.parameter_count(),
                       interrupted=interrupted, history=state.history, main_process=ctx.is_main,
                       processes=ctx.world_size)


def _forward_backward(run: Run, lanes: Lanes | None, x: torch.Tensor, y: torch.Tensor,
                      hidden: State) -> tuple[torch.Tensor, State]:
    """One step's gradients in .grad, each member's clipped as if it trained alone: the sum of the members' mean
    losses (nats) and the new state; members side by side on `lanes` where given, else in turn."""
    model, clip = run.model, run.config.grad_clip
    run.optimizer.zero_grad(set_to_none=True)
    if isinstance(model, Ensemble):
        model.seed_members()
    if lanes is not None:
        return lanes.step(model, x, y, hidden, bf16=run.bf16, grad_clip=clip)
    return step_in_turn(run.wrapped, model, x, y, hidden, bf16=run.bf16, grad_clip=clip)


def _progress(run: Run, state: RunState, loss_nats: float, lr: float, session_seconds: float) -> Progress:
    chars = (state.step - run.first_step) * run.config.batch_size * run.config.seq_len
    return Progress(step=state.step, total_steps=run.total_steps, epoch=state.step / run.batches.windows_per_epoch,
                    train_nats=loss_nats, val_bits=state.last_val_bits,
                    chars_per_second=chars / max(1e-9, session_seconds), elapsed=state.elapsed_seconds,
                    fraction_done=min(1.0, run.fraction_done(state.step, state.elapsed_seconds)), lr=lr)


def _sample_due(state: RunState, every: int) -> bool:
    """At a validation point, once `every` steps have passed since the last sample (or none was taken)."""
    last = state.history["samples"][-1][0] if state.history["samples"] else 0
    return state.step - last >= every


def _sample(run: Run, state: RunState) -> None:
    """A short sample from the seed, shown in the log and kept in the history. Its own generator, seeded alike
    each time, so successive samples differ only by what the model learned; training's random stream and
    weights are untouched (tested)."""
    start = time.perf_counter()
    seed = run.corpus.vocab.decode(run.corpus.vocab.encode(run.sample_seed, drop_unknown=True))
    generator = torch.Generator(device=run.device).manual_seed(run.config.random_seed)
    config = SampleConfig(length=run.config.sample_length, temperature=0.8)
    text = seed + "".join(chars[0] for chars in sampling.generate(run.model, run.corpus.vocab, seed, config, generator))
    run.model.train()  # generate() put it in eval mode
    seconds = time.perf_counter() - start
    state.history["samples"].append([state.step, text, seconds])
    run.log(f"--- sample at step {state.step} (took {seconds:.2f} s) ---\n{text}\n---")


def _validate(run: Run) -> float:
    """Validation loss in nats/char over this rank's share of the sample, summed across ranks."""
    share = len(run.val_ids) // run.ctx.world_size
    mine = run.val_ids[run.ctx.rank * share: (run.ctx.rank + 1) * share + 1]
    eval_config = EvalConfig(streams=max(1, min(64, run.config.batch_size)), burn_in=run.config.seq_len)
    losses = losses_per_char(run.model, mine, config=eval_config, bf16=run.bf16)
    total, count = distributed.all_reduce_sum([float(losses.double().sum()), float(len(losses))], run.ctx)
    return total / count


def _save(run: Run, state: RunState, val_nats: float | None) -> None:
    """latest.pt always, best.pt when validation is at its best; only rank 0 writes, all ranks gather."""
    hidden_all = [[distributed.all_gather_rows(t.detach(), run.ctx, dim=1).cpu() for t in layer]
                  for layer in state.hidden]
    if not run.ctx.is_main:
        return
    c = run.corpus
    payload = {
        "model_config": run.model_config.to_dict(),
        "train_config": run.config.to_dict(),
        "vocab": c.vocab.to_list(),
        "model": {k: v.detach().cpu() for k, v in run.model.state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "epoch": state.step / run.batches.windows_per_epoch,
        **state.to_checkpoint(hidden_all),
        "corpus": {"name": c.name, "path": str(Path(c.path).resolve()), "fingerprint": c.fingerprint,
                   "chars": len(c.ids), "val_fraction": run.config.val_fraction,
                   "val_split": run.config.val_split.value},
        "world_size": run.ctx.world_size,
        "bf16": run.bf16,  # the arithmetic this run chose, kept on resume
        "plan": run.plan_note,
    }
    checkpoint.save(run.out / checkpoint.LATEST, payload)
    if val_nats is not None and val_nats <= state.best_val_nats:
        checkpoint.save(run.out / checkpoint.BEST, payload)


def _diverged(run: Run, step: int, loss_nats: float) -> None:
    latest = run.out / checkpoint.LATEST
    kept = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint was written"
    raise CharRNNError(
        f"training stopped at step {step}: the loss became {loss_nats:.4g} nats/char, worse than guessing "
        f"({math.log(run.model_config.vocab_size):.2f}): it diverged; {kept}; lower --lr (now {run.config.lr:g}) "
        "and train again")
