"""The command line: parse options into configs, make one call per command, map errors to one stderr line.

The only module that imports typer and the only writer to stdout. Commands import torch-heavy modules inside
their bodies so that `charrnn --help` answers without waiting for torch to load.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn import __version__
from charrnn.config import Cell, Precision, Schedule
from charrnn.errors import CharRNNError

# torch warns on import when numpy is absent; charrnn never needs numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

app = typer.Typer(
    name="charrnn",
    help="Train character-level RNN language models on any text, sample from them, and measure them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
corpus_app = typer.Typer(help="Built-in corpora, assembled from files every installation has.", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")

RUNS_DIR = Path("runs")


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


@contextmanager
def user_errors():
    """CharRNNError becomes one stderr line and its exit code; Ctrl-C exits 130 without a traceback."""
    from charrnn import ui

    try:
        yield
    except CharRNNError as e:
        ui.message(f"error: {e.message}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        ui.message("interrupted")
        raise typer.Exit(130) from None


def given_options(ctx: typer.Context) -> frozenset[str]:
    """The options the user typed (not defaults): on --resume only these override the checkpoint."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return frozenset(name for name, source in sources.items() if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"))


def _version(value: bool):
    if value:
        sys.stdout.write(f"charrnn {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    pass


CheckpointOption = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", help="A .pt file or a run directory (its best.pt). Default: the most recent run under runs/.")]
DeviceOption = Annotated[Device, typer.Option(help="Where to run: auto picks cuda, then mps, then cpu.")]


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A UTF-8 text file, or a built-in corpus name (cpp, python). Default: cpp.", show_default=False)] = None,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell type.")] = Cell.LSTM,
    layers: Annotated[int, typer.Option(help="Number of recurrent layers.")] = 2,
    hidden: Annotated[int, typer.Option(help="Units per recurrent layer.")] = 256,
    embedding: Annotated[Optional[int], typer.Option(
        help="Character embedding size. Default: the vocabulary size (one-hot equivalent), at most 256.",
        show_default=False)] = None,
    skip: Annotated[bool, typer.Option(
        "--skip/--no-skip", help="Graves (2013) skip connections: the input feeds every layer, every layer feeds the output.")] = True,
    dropout: Annotated[float, typer.Option(help="Dropout probability between layers and before the output layer.")] = 0.0,
    seq_len: Annotated[int, typer.Option(help="Characters per truncated-BPTT window.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Parallel streams of the text per step (global, across processes).")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam).")] = 3e-3,
    schedule: Annotated[Schedule, typer.Option(
        help="Learning-rate schedule after warm-up: cosine decays to 5% of --lr over the budget; constant keeps it.")] = Schedule.COSINE,
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear learning-rate warm-up.")] = 50,
    grad_clip: Annotated[float, typer.Option(help="Clip the gradient's global norm to this (0: off).")] = 1.0,
    steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps in total (counting resumed ones).", show_default=False)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Stop after this many passes over the training text.", show_default=False)] = None,
    minutes: Annotated[Optional[float], typer.Option(
        help="Stop after this much wall-clock time in total. With no --steps/--epochs/--minutes: 10 minutes.", show_default=False)] = None,
    val_fraction: Annotated[float, typer.Option(help="Fraction of the text (at its end) held out for validation.")] = 0.05,
    eval_every: Annotated[int, typer.Option(help="Validate and save a checkpoint every this many steps.")] = 100,
    precision: Annotated[Precision, typer.Option(
        help="Arithmetic. auto: bf16 autocast where the hardware has native bf16 (recent GPUs, CPUs with AVX512-BF16 "
             "or AMX; 1.3-2.7x faster, same bits/char), else fp32.")] = Precision.AUTO,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory for latest.pt and best.pt. Default: runs/<corpus name>.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its latest.pt, exactly where it stopped.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run, or resume on a corpus whose text changed.")] = False,
    device: DeviceOption = Device.AUTO,
    random_seed: Annotated[int, typer.Option(help="Seed for initialisation and dropout: the same seed gives the same run.")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads. Default: torch's choice (the physical cores).", show_default=False)] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus file.")] = "utf-8",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only errors and the summary.")] = False,
):
    """Train a model on a text file or a built-in corpus; checkpoints go to the run directory."""
    with user_errors():
        from charrnn import corpora, train as training, ui
        from charrnn.config import TrainConfig

        explicit = given_options(ctx)
        if threads is not None and threads < 1:
            raise CharRNNError(f"--threads must be at least 1, got {threads}")
        path, name = corpora.resolve(corpus)
        job = training.TrainJob(
            corpus_path=path, corpus_name=name, out=out or RUNS_DIR / name,
            model=training.ModelOptions(cell=cell, layers=layers, hidden=hidden, embedding=embedding, skip=skip, dropout=dropout),
            train=TrainConfig(seq_len=seq_len, batch_size=batch_size, lr=lr, schedule=schedule, warmup_steps=warmup_steps,
                              grad_clip=grad_clip, steps=steps, epochs=epochs, minutes=minutes, val_fraction=val_fraction,
                              eval_every=eval_every, random_seed=random_seed, precision=precision),
            explicit=explicit, resume=resume, force=force, device=device.value, threads=threads, encoding=encoding)
        if embedding is not None and embedding < 1:
            raise CharRNNError(f"--embedding must be greater than 0, got {embedding}")
        progress = ui.TrainProgress(quiet)
        try:
            result = training.run(job, on_progress=progress, log=(lambda s: None) if quiet else ui.message)
        finally:
            progress.close()
        if not result.main_process:
            return
        best = f"{result.best_val_bits:.3f}" if result.best_val_bits is not None else "n/a"
        ui.message(f"{'interrupted at' if result.interrupted else 'trained'} step {result.steps} "
                   f"in {result.seconds / 60:.1f} min; best validation {best} bits/char; checkpoints in {result.run_dir}/")
        if result.interrupted:
            ui.message(f"saved {result.run_dir}/latest.pt; continue with: charrnn train {corpus or ''} "
                       f"--out {result.run_dir} --resume".replace("  ", " "))
            raise typer.Exit(130)



def _load_checkpoint(path: Path | None):
    """(resolved path, checkpoint dict) for --checkpoint, or the newest run under runs/ when it is omitted."""
    from charrnn import checkpoint as ckpt

    resolved = ckpt.resolve(path) if path is not None else ckpt.latest_run(RUNS_DIR)
    return resolved, ckpt.load(resolved)


class _StdoutWriter:
    """Buffered UTF-8 writes to stdout, flushed every 64 characters or 50 ms so text appears as it is made."""

    def __init__(self):
        import time

        self._clock = time.monotonic
        self._last = self._clock()
        self._pending: list[str] = []

    def write(self, text: str) -> None:
        self._pending.append(text)
        if len(self._pending) >= 64 or self._clock() - self._last > 0.05:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            sys.stdout.buffer.write("".join(self._pending).encode("utf-8"))
            self._pending.clear()
        sys.stdout.buffer.flush()
        self._last = self._clock()


@app.command()
def sample(
    checkpoint: CheckpointOption = None,
    seed: Annotated[str, typer.Option("--seed", "-s", help="Text that primes the model; it is printed first unless --no-echo.")] = "",
    seed_file: Annotated[Optional[Path], typer.Option(help="Read the priming text from this file (UTF-8) instead of --seed.",
                                                      exists=True, dir_okay=False, show_default=False)] = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate per sample.")] = 1000,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 means greedy (argmax).")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k most likely characters.", show_default=False)] = None,
    top_p: Annotated[Optional[float], typer.Option(help="Nucleus sampling: the smallest set of characters with this total probability.", show_default=False)] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated together as one batch.")] = 1,
    out_dir: Annotated[Optional[Path], typer.Option(help="Write each sample to DIR/sample-NNN.txt instead of stdout.", show_default=False)] = None,
    random_seed: Annotated[Optional[int], typer.Option(help="Seed for sampling: the same seed and options give the same text. Default: random.", show_default=False)] = None,
    stop: Annotated[Optional[list[str]], typer.Option(help="End a sample once it emits this string (included). Repeatable.", show_default=False)] = None,
    no_echo: Annotated[bool, typer.Option("--no-echo", help="Do not print the seed before the generated text.")] = False,
    drop_unknown: Annotated[bool, typer.Option(help="Drop seed characters the model does not know instead of failing.")] = False,
    device: DeviceOption = Device.AUTO,
):
    """Generate text from a trained model and stream it to stdout."""
    with user_errors():
        from charrnn import sampling, train as training
        from charrnn.config import SampleConfig

        config = SampleConfig(length=length, temperature=temperature, top_k=top_k, top_p=top_p, num_samples=num_samples,
                              random_seed=random_seed, stop=tuple(stop or ()), echo=not no_echo, drop_unknown=drop_unknown)
        if seed_file is not None:
            try:
                seed = seed_file.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise CharRNNError(f"{seed_file}: not valid UTF-8 at byte {e.start}; save the seed file as UTF-8") from None
        torch_device = training.pick_device(device.value)
        _, state = _load_checkpoint(checkpoint)
        model, vocab = sampling.load_for_sampling(state, torch_device)
        seed_text = sampling.prepare_seed(vocab, seed, drop_unknown)
        sampling.check_seed_not_empty_after_drop(seed, seed_text)
        pieces = sampling.generate(model, vocab, seed_text, config, sampling.make_generator(random_seed, torch_device))
        prefix = seed_text if config.echo else ""
        if out_dir is not None:
            _write_sample_files(out_dir, pieces, prefix, num_samples)
            return
        try:
            _stream_samples(pieces, prefix, num_samples)
        except BrokenPipeError:
            # The reader went away (`| head`): stop generating, exit 0, and keep the exit-time flush from failing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None


def _stream_samples(pieces, prefix: str, num_samples: int) -> None:
    """Sample 1 streams live; with several, the others are held and printed after it, each under a header."""
    out = _StdoutWriter()
    header = (lambda k: f"--- sample {k + 1} of {num_samples} ---\n") if num_samples > 1 else (lambda k: "")
    out.write(header(0) + prefix)
    held = [[prefix] for _ in range(num_samples - 1)]
    for chars in pieces:
        out.write(chars[0])
        for k, ch in enumerate(chars[1:]):
            held[k].append(ch)
    for k, text in enumerate(held, start=1):
        out.write("\n\n" + header(k) + "".join(text))
    out.write("\n")
    out.flush()


def _write_sample_files(out_dir: Path, pieces, prefix: str, num_samples: int) -> None:
    from charrnn import ui

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"sample-{k + 1:03d}.txt" for k in range(num_samples)]
    files = [open(p, "w", encoding="utf-8") for p in paths]
    try:
        for f in files:
            f.write(prefix)
        for chars in pieces:
            for f, ch in zip(files, chars):
                f.write(ch)
    finally:
        for f in files:
            f.close()
    ui.message(f"wrote {num_samples} sample(s) to {out_dir}/")


@app.command("eval")
def evaluate_command(
    file: Annotated[Optional[Path], typer.Argument(
        help="Text to score. Default: the validation split of the corpus the model was trained on.", show_default=False)] = None,
    checkpoint: CheckpointOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object with the results on stdout.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on characters the model does not know (default: skip and count them).")] = False,
    dynamic: Annotated[bool, typer.Option(help="Dynamic evaluation: adapt the weights to the text already scored (Krause et al. 2017).")] = False,
    dynamic_lr: Annotated[float, typer.Option(help="Learning rate of dynamic evaluation's RMS-normalised steps.")] = 1e-3,
    dynamic_window: Annotated[int, typer.Option(help="Characters scored between two dynamic-evaluation updates.")] = 64,
    streams: Annotated[int, typer.Option(help="Parallel streams the text is cut into (more is faster; each reads 256 chars of context first).")] = 64,
    device: DeviceOption = Device.AUTO,
    precision: Annotated[Precision, typer.Option(
        help="Arithmetic: fp32 (exact, comparable across machines), bf16 autocast (faster; within ~1e-4 bits/char), "
             "or auto (bf16 where the hardware has native bf16).")] = Precision.FP32,
    encoding: Annotated[str, typer.Option(help="Text encoding of FILE.")] = "utf-8",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Measure how well a model predicts text: nats and bits per character, perplexity."""
    with user_errors():
        from charrnn import evaluate, train as training, ui
        from charrnn.config import EvalConfig

        config = EvalConfig(streams=streams, strict=strict, dynamic=dynamic, dynamic_lr=dynamic_lr, dynamic_window=dynamic_window)
        torch_device = training.pick_device(device.value)
        path, state = _load_checkpoint(checkpoint)
        job = evaluate.EvalJob(state=state, file=file, config=config, device=torch_device,
                               bf16=evaluate.uses_bf16(precision, torch_device), encoding=encoding)
        progress = ui.CountProgress(job.size_hint(), "eval", quiet or json_output and not sys.stderr.isatty())
        try:
            result = evaluate.run(job, on_chars=progress)
        finally:
            progress.close()
        report = {
            "nats_per_char": result.nats_per_char,
            "bits_per_char": result.bits_per_char,
            "perplexity": result.perplexity,
            "chars": result.chars,
            "unknown_chars": result.unknown_chars,
            "chars_per_second": result.chars_per_second,
            "checkpoint": str(path),
            "file": str(job.source_path()),
        }
        if dynamic:
            report["static_bits_per_char"] = result.static_bits_per_char
        if json_output:
            sys.stdout.write(json.dumps(report) + "\n")
            return
        rows = [("file", report["file"]), ("checkpoint", str(path)),
                ("characters", f"{result.chars:,}" + (f" ({result.unknown_chars:,} unknown skipped)" if result.unknown_chars else "")),
                ("nats/char", f"{result.nats_per_char:.4f}"), ("bits/char", f"{result.bits_per_char:.4f}"),
                ("perplexity", f"{result.perplexity:.3f}"), ("speed", f"{result.chars_per_second:,.0f} chars/s")]
        if dynamic:
            rows.insert(5, ("static bits/char", f"{result.static_bits_per_char:.4f}"))
        ui.key_value_table("charrnn eval", rows)


@app.command()
def info(
    checkpoint: Annotated[Optional[Path], typer.Argument(help="A .pt file or a run directory. Default: the most recent run.", show_default=False)] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the information as one JSON object on stdout.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Also write a chart of training and validation bits/char (SVG).", show_default=False)] = None,
):
    """Show a checkpoint's model, vocabulary, training progress and loss history."""
    with user_errors():
        from charrnn import checkpoint as ckpt, ui

        path, state = _load_checkpoint(checkpoint)
        summary = ckpt.summarize(path, state)
        if plot is not None:
            from charrnn import visualize

            if plot.suffix.lower() != ".svg":
                raise CharRNNError(f"--plot {plot}: only SVG is supported; name the file with .svg")
            _write_text_atomically(plot, visualize.loss_chart_svg(summary["history"]))
            ui.message(f"wrote {plot}")
        if json_output:
            sys.stdout.write(json.dumps(summary) + "\n")
            return
        ui.show_info(summary)


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="The text to look at (UTF-8).", exists=True, dir_okay=False)],
    checkpoint: CheckpointOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write (self-contained).")] = Path("page.html"),
    max_chars: Annotated[int, typer.Option(help="Show at most this many characters from the start of FILE.")] = 20_000,
    cell: Annotated[Optional[str], typer.Option("--cell", help="Colour by the activation of cell N of layer L (L:N, from 0) instead of by surprise.", show_default=False)] = None,
    find_cells: Annotated[bool, typer.Option("--find-cells", help="Rank cells by correlation with string/comment/bracket-depth/column features; list them on stderr.")] = False,
    drop_unknown: Annotated[bool, typer.Option(help="Drop characters the model does not know instead of failing.")] = False,
    device: DeviceOption = Device.AUTO,
):
    """Write an HTML page of a text coloured by the model's surprise (or a cell's activation), with its top-5 guesses on hover."""
    with user_errors():
        from charrnn import sampling, train as training, ui, visualize

        if max_chars < 1:
            raise CharRNNError(f"--max-chars must be at least 1, got {max_chars}")
        with open(file, encoding="utf-8", errors="strict") as f:
            try:
                text = f.read(max_chars)
            except UnicodeDecodeError as e:
                raise CharRNNError(f"{file}: not valid UTF-8 at byte {e.start}; save it as UTF-8") from None
        path, state = _load_checkpoint(checkpoint)
        model, vocab = sampling.load_for_sampling(state, training.pick_device(device.value))
        text = vocab.decode(vocab.encode(text, drop_unknown=drop_unknown))
        if len(text) < 2:
            raise CharRNNError(f"{file}: needs at least 2 characters the model knows to show anything")
        chosen = visualize.parse_cell(cell, model.config.layers, model.config.hidden) if cell else None
        t = visualize.trace(model, vocab, text)
        if find_cells:
            for m in visualize.find_cells(t):
                ui.message(f"{m.feature:>22}: cell {m.layer}:{m.cell}  r = {m.correlation:+.3f}")
        _write_text_atomically(out, visualize.render(t, title=f"{file.name} · {path}", cell=chosen))
        ui.message(f"wrote {out} ({len(text):,} characters)")


def _write_text_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@corpus_app.command("list")
def corpus_list(
    json_output: Annotated[bool, typer.Option("--json", help="Print the list as JSON on stdout.")] = False,
    build: Annotated[bool, typer.Option(help="Build corpora that are not cached yet, to show their sizes.")] = False,
):
    """List the built-in corpora: size, distinct characters, whether cached."""
    with user_errors():
        from dataclasses import asdict

        from charrnn import corpora, ui

        infos = [corpora.describe(name, build_if_missing=build) for name in corpora.names()]
        if json_output:
            sys.stdout.write(json.dumps([asdict(i) for i in infos]) + "\n")
            return
        from rich.table import Table

        table = Table("name", "chars", "distinct", "files", "cached", "description", title="built-in corpora", title_justify="left")
        for i in infos:
            table.add_row(i.name, f"{i.chars:,}" if i.chars else "?", str(i.distinct or "?"), str(i.files or "?"),
                          "yes" if i.cached else "no (charrnn corpus list --build)", i.description)
        ui.err.print(table)


@corpus_app.command("build")
def corpus_build(
    name: Annotated[str, typer.Argument(help="A built-in corpus name (cpp, python).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the corpus text to this file.")],
):
    """Assemble a built-in corpus and write it to a file (the exact text `charrnn train NAME` uses)."""
    with user_errors():
        import shutil

        from charrnn import corpora, ui

        if name not in corpora.names():
            raise CharRNNError(f"{name}: not a built-in corpus (built-in: {', '.join(corpora.names())})")
        source = corpora.build(name)
        tmp = out.with_name(out.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, out)
        ui.message(f"wrote {out} ({source.stat().st_size:,} bytes)")

def main() -> None:
    try:
        app()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; point stdout at devnull so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
