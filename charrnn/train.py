"""The training loop: streams of the corpus, truncated BPTT, schedule, validation, checkpoints, exact resume."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn import allocator, checkpoint, distributed, files
from charrnn.config import Cell, ModelConfig, Precision, Schedule, TrainConfig
from charrnn.data import Corpus, StreamBatches, read_corpus, spread_sample
from charrnn.errors import CharRNNError
from charrnn.evaluate import EvalConfig, losses_per_char
from charrnn.model import CharRNN, State, detach_state
from charrnn.precision import autocast, bf16_runs, choose_bf16

LN2 = math.log(2)
DEFAULT_MINUTES = 10.0  # the budget when none of --steps, --epochs, --minutes is given


@dataclass(frozen=True)
class ModelOptions:
    """Architecture choices from the command line; the vocabulary size comes from the corpus."""

    cell: Cell = Cell.LSTM
    layers: int = 2
    hidden: int = 256
    embedding: int | None = None  # None: the vocabulary size (one-hot equivalent), at most 256
    skip: bool = True
    dropout: float = 0.0

    def for_vocab(self, vocab_size: int) -> ModelConfig:
        embedding = self.embedding or min(vocab_size, 256)
        return ModelConfig(vocab_size=vocab_size, cell=self.cell, layers=self.layers, hidden=self.hidden,
                           embedding=embedding, skip=self.skip, dropout=self.dropout)


@dataclass(frozen=True)
class TrainJob:
    corpus_path: Path
    corpus_name: str
    out: Path
    model: ModelOptions = ModelOptions()
    train: TrainConfig = TrainConfig()
    explicit: frozenset[str] = frozenset()  # option names the user set; on --resume they override the checkpoint
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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharRNNError("--device cuda: CUDA is not available on this machine; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharRNNError("--device mps: Apple MPS is not available on this machine; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise CharRNNError(f"--device {name!r} is not one of auto, cpu, cuda, mps")
    return torch.device(name)


def _adam(model: torch.nn.Module, lr: float, device: torch.device) -> torch.optim.Optimizer:
    """Adam, fused into one kernel where torch has one for the device (5x faster than foreach on the CPU)."""
    if device.type in ("cpu", "cuda"):
        try:
            return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99), fused=True)
        except (RuntimeError, ValueError):  # an older torch without the fused CPU kernel
            pass
    return torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))


def _choose_bf16(precision: Precision, model_config: ModelConfig, batch_size: int, device: torch.device,
                 resumed_bf16: bool | None) -> tuple[bool, str]:
    """bf16 autocast or not, and why, by charrnn.precision's rule: a pure function of the hardware and the
    shapes, never of a timing. A resumed `auto` run keeps the arithmetic it ran in (where the hardware still
    runs it), so that it resumes exactly even if the rule changed since."""
    if precision is Precision.AUTO and resumed_bf16 is not None:
        if not resumed_bf16 or bf16_runs(device.type, model_config.cell):
            return resumed_bf16, f"{'bf16 autocast' if resumed_bf16 else 'fp32'} (auto: as before resuming)"
    return choose_bf16(precision, device, cell=model_config.cell, hidden=model_config.hidden, batch_size=batch_size)


def _budget_note(config: TrainConfig, total_steps: int | None) -> str:
    """The budget for the first log line, saying plainly whether the run repeats exactly."""
    steps = f"{total_steps:,} steps" if total_steps else ""
    if not config.minutes:
        return f"budget {steps} (the same seed repeats this run exactly)"
    clock = f"{config.minutes:g} min of wall clock"
    return (f"budget {clock}{' or ' + steps if steps else ''}, whichever ends first (the clock sets the last step "
            "and the learning-rate decay, so runs differ; --steps or --epochs repeat exactly)")


def lr_at(step: int, config: TrainConfig, fraction_done: float) -> float:
    """Linear warm-up, then (cosine) decay to final_lr_fraction × lr as the budget runs out."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule is Schedule.CONSTANT:
        return config.lr
    f = config.final_lr_fraction
    return config.lr * (f + (1 - f) * 0.5 * (1 + math.cos(math.pi * min(1.0, fraction_done))))


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


def _resolve_out(job: TrainJob, ctx: distributed.Context) -> Path:
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
    for name in ("cell", "layers", "hidden", "embedding", "skip"):
        if name in job.explicit:
            wanted = getattr(job.model, name)
            have = getattr(model_config, name)
            if wanted != have:
                raise CharRNNError(f"--resume: --{name} {getattr(wanted, 'value', wanted)} differs from the checkpoint's "
                                   f"{getattr(have, 'value', have)}; drop --{name} to continue the run")
    if "dropout" in job.explicit:
        model_config = replace(model_config, dropout=job.model.dropout)
    saved = TrainConfig.from_dict(state["train_config"])
    overrides = {name: getattr(job.train, name) for name in job.explicit if hasattr(saved, name)}
    if {"steps", "epochs", "minutes"} & job.explicit:  # a new budget replaces the old one entirely
        overrides = {"steps": None, "epochs": None, "minutes": None, **overrides}
    return model_config, replace(saved, **overrides)


def run(job: TrainJob, *, on_progress: Callable[[Progress], None] = lambda p: None,
        log: Callable[[str], None] = lambda s: None) -> TrainResult:
    ctx = distributed.init(pick_device(job.device))
    try:
        return _run(job, ctx.device, ctx, on_progress, log)
    finally:
        distributed.cleanup()


def _run(job: TrainJob, device: torch.device, ctx: distributed.Context,
         on_progress: Callable[[Progress], None], log: Callable[[str], None]) -> TrainResult:
    if job.threads:
        torch.set_num_threads(job.threads)
    files.output_dir(job.out, "--out")
    lock = checkpoint.RunLock(job.out) if ctx.is_main else None  # first: a concurrent run is told so, whatever else
    if lock:
        lock.__enter__()
    try:
        out = _resolve_out(job, ctx)
        if ctx.is_main:
            checkpoint.remove_stray_temporaries(out)
        return _train(job, out, device, ctx, on_progress, log)
    finally:
        if lock:
            lock.__exit__(None, None, None)


def _train(job: TrainJob, out: Path, device: torch.device, ctx: distributed.Context,
           on_progress: Callable[[Progress], None], log: Callable[[str], None]) -> TrainResult:
    resumed = checkpoint.load(out / checkpoint.LATEST) if job.resume else None
    if resumed is not None:
        from charrnn.vocab import Vocab

        vocab = Vocab.from_list(resumed["vocab"])
        corpus = read_corpus(job.corpus_path, name=job.corpus_name, encoding=job.encoding, vocab=vocab)
        if corpus.fingerprint != resumed["corpus"]["fingerprint"] and not job.force:
            raise CharRNNError(f"--resume: {job.corpus_path} is not the corpus this run trained on "
                               f"({resumed['corpus']['path']}); its text differs, pass --force to continue on it anyway")
        model_config, config = _merge_on_resume(job, resumed)
    else:
        corpus = read_corpus(job.corpus_path, name=job.corpus_name, encoding=job.encoding)
        model_config, config = job.model.for_vocab(len(corpus.vocab)), job.train
    if not (config.steps or config.epochs or config.minutes):
        config = replace(config, minutes=DEFAULT_MINUTES)

    torch.manual_seed(config.random_seed)
    model = CharRNN(model_config).to(device)
    train_ids, val_ids = corpus.split(config.val_fraction)
    batches = StreamBatches(train_ids, config.batch_size, config.seq_len, rank=ctx.rank, world_size=ctx.world_size)
    val_ids = spread_sample(val_ids, config.val_max_chars)
    # From here on each step reuses the last step's memory; turned on after the corpus is read so that its
    # temporaries still go back to the OS. Not under torchrun: a gloo rank aborted once at exit with it (CI).
    if not ctx.enabled:
        allocator.keep_freed_memory()
    optimizer = _adam(model, config.lr, device)
    step, elapsed_before, best_val = 0, 0.0, math.inf
    history: dict = {"train": [], "val": []}
    state: State = model.initial_state(batches.batch_size, device)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        fused = optimizer.param_groups[0].get("fused")
        optimizer.load_state_dict(resumed["optimizer"])
        for group in optimizer.param_groups:  # the saved flag names the device it was saved on, not this one
            group["fused"] = fused
        step = int(resumed["step"])
        elapsed_before = float(resumed.get("elapsed_seconds", 0.0))
        best_val = float(resumed.get("best_val_nats", math.inf))
        history = {"train": list(resumed["history"]["train"]), "val": list(resumed["history"]["val"])}
        torch.set_rng_state(resumed["rng"]["torch"])
        rows = slice(ctx.rank * batches.batch_size, (ctx.rank + 1) * batches.batch_size)
        if resumed.get("hidden") and resumed["hidden"][0][0].shape[1] == config.batch_size:
            state = [tuple(t[:, rows].to(device) for t in layer) for layer in resumed["hidden"]]
        if ctx.is_main:
            log(f"resuming {out} at step {step}")
    for group in optimizer.param_groups:
        group["lr"] = config.lr

    bf16, arithmetic = _choose_bf16(config.precision, model_config, batches.batch_size, device,
                                    resumed.get("bf16") if resumed is not None else None)

    wrapped = model
    if ctx.enabled:
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    total_steps = config.steps
    if config.epochs is not None:
        epoch_steps = math.ceil(config.epochs * batches.windows_per_epoch)
        total_steps = min(total_steps, epoch_steps) if total_steps else epoch_steps
    budget_seconds = config.minutes * 60 if config.minutes else None
    chars_per_step = config.batch_size * config.seq_len
    diverged_nats = 3 * math.log(model_config.vocab_size) + 1  # uniform guessing scores ln(V); far above it is divergence
    eval_config = EvalConfig(streams=max(1, min(64, config.batch_size)), burn_in=config.seq_len)

    def fraction_done(step: int, elapsed: float) -> float:
        parts = []
        if total_steps:
            parts.append(step / total_steps)
        if budget_seconds:
            parts.append(elapsed / budget_seconds)
        return max(parts) if parts else 0.0

    def validate() -> float:
        """Validation loss over this rank's share of the split, summed across ranks."""
        share = len(val_ids) // ctx.world_size
        mine = val_ids[ctx.rank * share: (ctx.rank + 1) * share + 1]
        losses = losses_per_char(model, mine, config=eval_config, bf16=bf16)
        total, count = distributed.all_reduce_sum([float(losses.double().sum()), float(len(losses))], ctx)
        return total / count

    def save(step: int, elapsed: float, val_nats: float | None) -> None:
        hidden = [[distributed.all_gather_rows(t.detach(), ctx, dim=1).cpu() for t in layer] for layer in state]
        if not ctx.is_main:
            return
        payload = {
            "model_config": model_config.to_dict(),
            "train_config": config.to_dict(),
            "vocab": corpus.vocab.to_list(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": step / batches.windows_per_epoch,
            "elapsed_seconds": elapsed,
            "best_val_nats": best_val,
            "rng": {"torch": torch.get_rng_state()},
            "hidden": hidden,
            "history": history,
            "corpus": {"name": corpus.name, "path": str(Path(corpus.path).resolve()), "fingerprint": corpus.fingerprint,
                       "chars": len(corpus.ids), "val_fraction": config.val_fraction},
            "world_size": ctx.world_size,
            "bf16": bf16,  # the arithmetic this run chose, kept on resume
        }
        checkpoint.save(out / checkpoint.LATEST, payload)
        if val_nats is not None and val_nats <= best_val:
            checkpoint.save(out / checkpoint.BEST, payload)

    if ctx.is_main:
        log(f"corpus {corpus.name}: {len(corpus.ids):,} chars, {len(corpus.vocab)} distinct; "
            f"model {model_config.cell.value} {model_config.layers}x{model_config.hidden}"
            f"{' with skips' if model_config.skip else ''}, {model.parameter_count():,} parameters; "
            f"device {device}{f' x {ctx.world_size} processes' if ctx.enabled else ''}, "
            f"{arithmetic}; {_budget_note(config, total_steps)}")

    start_time = time.perf_counter()
    last_val_bits = history["val"][-1][1] / LN2 if history["val"] else None
    interrupted = False
    model.train()
    with _StopRequest() as stop:
        while True:
            elapsed = elapsed_before + time.perf_counter() - start_time
            done = fraction_done(step, elapsed) >= 1.0
            if distributed.any_rank(done or stop.requested, ctx):
                interrupted = stop.requested and not done
                break
            if batches.starts_epoch(step):
                state = model.initial_state(batches.batch_size, device)  # a new pass: streams jump back to the start
            lr = lr_at(step, config, fraction_done(step, elapsed))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = (t.to(device, non_blocking=True) for t in batches.window(step))
            with autocast(device, bf16):
                logits, state = wrapped(x, state)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            loss_value = loss.item()
            if distributed.any_rank(not loss_value <= diverged_nats, ctx):  # NaN fails every comparison
                kept = (f"the last good checkpoint is {out / checkpoint.LATEST}" if (out / checkpoint.LATEST).exists()
                        else "no checkpoint was written")
                raise CharRNNError(
                    f"training stopped at step {step + 1}: the loss became {loss_value:.4g} nats/char, worse than "
                    f"guessing ({math.log(model_config.vocab_size):.2f}): it diverged; {kept}; lower --lr "
                    f"(now {config.lr:g}) and train again")
            optimizer.step()
            state = detach_state(state)
            step += 1
            elapsed = elapsed_before + time.perf_counter() - start_time
            history["train"].append([step, loss_value])
            val_nats = None
            finishing = fraction_done(step, elapsed) >= 1.0
            if step % config.eval_every == 0 or finishing:
                val_nats = validate()
                history["val"].append([step, val_nats, elapsed])
                last_val_bits = val_nats / LN2
                best_val = min(best_val, val_nats)
                save(step, elapsed, val_nats)
            if ctx.is_main:
                run_seconds = max(1e-9, time.perf_counter() - start_time)
                done_steps = step - (int(resumed["step"]) if resumed else 0)
                on_progress(Progress(step=step, total_steps=total_steps, epoch=step / batches.windows_per_epoch,
                                     train_nats=loss_value, val_bits=last_val_bits,
                                     chars_per_second=done_steps * chars_per_step / run_seconds, elapsed=elapsed,
                                     fraction_done=min(1.0, fraction_done(step, elapsed)), lr=lr))
        if interrupted or (history["val"] and history["val"][-1][0] != step) or not history["val"]:
            save(step, elapsed_before + time.perf_counter() - start_time, None)
    return TrainResult(run_dir=out, steps=step, seconds=elapsed_before + time.perf_counter() - start_time,
                       best_val_bits=best_val / LN2 if math.isfinite(best_val) else None, last_val_bits=last_val_bits,
                       parameters=model.parameter_count(), interrupted=interrupted, history=history,
                       main_process=ctx.is_main)
