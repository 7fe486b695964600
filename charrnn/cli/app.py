"""The Typer app and its main commands (train, sample, eval): parse options, make one call to charrnn.api, print.

inspect_commands (info, show) and corpus (corpus list|build) hold the rest, over common's shared pieces. The
cli package is the only one that imports typer and the only writer to stdout. Commands import the API inside
their bodies so that `charrnn --help` answers without waiting for torch to load.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn import __version__
from charrnn.cli import inspect_commands
from charrnn.cli.common import CheckpointOption, DeviceOption, MembersOption, ThreadsOption, given_options, user_errors, warn_about_threads
from charrnn.cli.corpus import corpus_app
from charrnn.config import Cell, Device, EvalConfig, Precision, Schedule, TrainConfig, ValSplit
from charrnn.errors import CharRNNError

# torch warns on import when numpy is absent; charrnn never needs numpy.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

app = typer.Typer(
    name="charrnn",
    help="Train character-level RNN language models on any text, sample from them, and measure them.",
    epilog="\b\nA first session:\n"
           "  charrnn train book.txt --minutes 5      # checkpoints in runs/book/\n"
           "  charrnn sample --seed \"The \" -n 500     # from the newest run\n"
           "  charrnn eval held_out.txt               # bits per character on text it never saw\n"
           "\n'charrnn COMMAND --help' explains each command's options.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool):
    if value:
        sys.stdout.write(f"charrnn {__version__}\n")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
):
    pass


@app.command()
def train(
    ctx: typer.Context,
    corpus: Annotated[Optional[str], typer.Argument(
        help="A UTF-8 text file, or a built-in corpus name (cpp, python). Default: cpp.", show_default=False)] = None,
    cell: Annotated[Cell, typer.Option(help="Recurrent cell type.")] = Cell.LSTM,
    layers: Annotated[int, typer.Option(help="Number of recurrent layers.")] = 2,
    hidden: Annotated[Optional[int], typer.Option(
        help="Units per recurrent layer. Default: planned from the corpus size and the budget (the first log line "
             "says what was chosen and why; bench/QUALITY.md has the rule).", show_default=False)] = None,
    embedding: Annotated[Optional[int], typer.Option(
        help="Character embedding size. Default: the vocabulary size (one-hot equivalent) rounded up to even, at most 128 "
             "(it feeds every layer, so it costs every layer's input product; and bf16 on a CPU with AMX trains odd sizes 1.7-1.8 times slower).",
        show_default=False)] = None,
    skip: Annotated[bool, typer.Option(
        "--skip/--no-skip", help="Graves (2013) skip connections: the input feeds every layer, every layer feeds the output.")] = True,
    dropout: Annotated[float, typer.Option(
        help="Dropout probability on each layer's output (where it feeds the next layer and the output layer). "
             "The plan regularises with --weight-drop instead, which always did better on text like the training "
             "text; if the model will meet text unlike it (other files, other authors), 0.3 on top did better "
             "there (bench/QUALITY.md).")] = 0.0,
    embedding_dropout: Annotated[float, typer.Option(help="Dropout probability on the embedded input characters.")] = 0.0,
    variational: Annotated[bool, typer.Option(
        "--variational-dropout/--no-variational-dropout",
        help="One dropout mask per stream for a whole window, shared across time steps (Gal & Ghahramani 2016).")] = False,
    weight_drop: Annotated[Optional[float], typer.Option(
        help="DropConnect probability on each layer's hidden-to-hidden weights, a new mask every step (Merity et "
             "al. 2017's weight-dropped LSTM); the fused recurrent kernels stay. Default: planned: 0.2 for a run "
             "planned to read its text about 6 times or more (0.1 for each of 2 or more --members, 0.05 for each of "
             "16 or more, none for 8 or more on a text under about 21,000 characters), else none.",
        show_default=False)] = None,
    members: Annotated[Optional[int], typer.Option(
        help="Networks trained side by side on the same batches, each on its own loss; the model predicts the mean "
             "of their probabilities (better held-out bits/char than one network, at members times the cost of a "
             "step and an exported page; on a CPU they train one per thread at a time). Default: planned: with --minutes, as many (up to 32) "
             "as the budget trains for the planned passes, which a small text ends early; 2 of the next --hidden "
             "down where one network of 192 or wider would read the text about 6 times or more (on a CPU with 2 or "
             "more threads); else 1.",
        show_default=False)] = None,
    seq_len: Annotated[int, typer.Option(
        help="Characters per truncated-BPTT window. Shortened, unless given, for a text too short for one window "
             "of a single stream.")] = TrainConfig.seq_len,
    batch_size: Annotated[int, typer.Option(
        help="Parallel streams of the text per step (global, across processes). Lowered, unless given, for a text "
             "too short for one window of each (under about 2,200 characters at the defaults).")] = TrainConfig.batch_size,
    segment_len: Annotated[Optional[int], typer.Option(
        help="Characters a stream reads in order (its state carried) before it moves to another part of the text; "
             "each pass reads every segment once, in a new order drawn from --random-seed, so a run that reads part of "
             "a large corpus samples all of it. 0: char-rnn's layout, each stream reading its own slice from start "
             "to end. Default: planned: two windows (128 at --seq-len 64) for a run planned to read less than its whole "
             "text, four windows (256 at --seq-len 64) for one planned to read it fewer than five times, else sixteen "
             "windows (1,024 at --seq-len 64); 0 for a text too short to cut into segments.",
        show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Peak learning rate (AdamW). Default: planned: 0.02 for a run that reads in shuffled segments "
             "(planned, or set by --segment-len) and less than its whole text, 0.015 for one that reads in them "
             "longer, 0.011 in char-rnn's layout.", show_default=False)] = None,
    schedule: Annotated[Schedule, typer.Option(
        help="Learning-rate schedule after warm-up: cosine decays to zero over the budget; constant keeps it.")] = Schedule.COSINE,
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear learning-rate warm-up.")] = TrainConfig.warmup_steps,
    grad_clip: Annotated[float, typer.Option(help="Clip the gradient's global norm to this (0: off).")] = TrainConfig.grad_clip,
    weight_decay: Annotated[float, typer.Option(
        help="AdamW's decoupled weight decay on the weight matrices (0: plain Adam).")] = TrainConfig.weight_decay,
    steps: Annotated[Optional[int], typer.Option(help="Stop after this many steps in total (counting resumed ones).", show_default=False)] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Stop after this many passes over the training text.", show_default=False)] = None,
    minutes: Annotated[Optional[float], typer.Option(
        help="Stop after this much wall-clock time in total (not repeatable: use --steps or --epochs for that). "
             "With no --steps/--epochs/--minutes: 10 minutes. A text small enough to be read many times in that "
             "time stops when more passes would over-fit (the first log line says after how many; --epochs overrides).",
        show_default=False)] = None,
    val_fraction: Annotated[float, typer.Option(help="Fraction of the text held out for validation (choosing best.pt).")] = TrainConfig.val_fraction,
    val_split: Annotated[ValSplit, typer.Option(
        help="Where the validation text comes from. spread: 20 pieces spread over the text, so it stands for the "
             "whole and the text's end still trains (the end lies nearest to what follows the file); end: the "
             "text's end, for text where only the future matters.")] = ValSplit.SPREAD,
    eval_every: Annotated[Optional[int], typer.Option(
        help="Validate and save a checkpoint every this many steps. Default: planned, about 10 times per run.",
        show_default=False)] = None,
    precision: Annotated[Precision, typer.Option(
        help="Arithmetic. auto: bf16 autocast where the hardware has native bf16 and it is faster for the shape: on "
             "a CPU with AVX512-BF16 or AMX (up to 3x faster as measured, same bits/char; without AMX, LSTMs of 1024+ units "
             "at batches under 128 stay fp32); on a GPU only from 2048 units, or 1024 at batch 128+; else fp32. Decided from the "
             "hardware and shapes alone, never timed, and only where a check at the start finds bf16's gradients right "
             "for the shapes (torch 2.13's LSTM on a CPU with AMX gets them wrong from 1024 units).")] = Precision.AUTO,
    sample_every: Annotated[Optional[int], typer.Option(
        help="Show a short sample on stderr at the first validation point every this many steps (and keep it for "
             "`charrnn info`). Default: off.", show_default=False)] = None,
    sample_length: Annotated[int, typer.Option(help="Characters per sample shown during training.")] = 200,
    sample_seed: Annotated[Optional[str], typer.Option(
        help="The seed of samples during training. Default: one that suits the corpus.", show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Run directory for latest.pt and best.pt. Default: runs/<corpus name>.", show_default=False)] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its latest.pt, exactly where it stopped.")] = False,
    force: Annotated[bool, typer.Option(help="Overwrite an existing run, or resume on a corpus whose text changed.")] = False,
    device: DeviceOption = Device.AUTO,
    random_seed: Annotated[int, typer.Option(
        help="Seed for initialisation and dropout. With --steps or --epochs the same seed gives the same run, bit "
             "for bit; with --minutes the clock decides the last step and the learning-rate decay, so runs differ.")] = 0,
    threads: ThreadsOption = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the corpus file.")] = "utf-8",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar; only errors and the summary.")] = False,
):
    """Train a model on a text file or a built-in corpus; checkpoints go to the run directory."""
    with user_errors():
        from charrnn import api, ui

        given = given_options(ctx)
        options = {name: value for name, value in ctx.params.items() if name in given and name in api.TRAIN_OPTIONS}
        progress = ui.TrainProgress(quiet)
        try:
            result = api.train(corpus, on_progress=progress, log=None if quiet else progress.message, **options)
        finally:
            progress.close()
        if not result.main_process:
            _end_torchrun_rank(result, 0)
            return
        best = f"{result.best_val_bits:.3f}" if result.best_val_bits is not None else "n/a"
        ui.message(f"{'interrupted at' if result.interrupted else 'trained'} step {result.steps} "
                   f"in {result.seconds / 60:.1f} min; best validation {best} bits/char; checkpoints in {result.run_dir}/")
        if result.interrupted:
            ui.message(f"saved {result.run_dir}/latest.pt; continue with: charrnn train {corpus or ''} "
                       f"--out {result.run_dir} --resume".replace("  ", " "))
        _end_torchrun_rank(result, 130 if result.interrupted else 0)
        if result.interrupted:
            raise typer.Exit(130)


def _end_torchrun_rank(result, code: int) -> None:
    """Under torchrun, end this rank now that its run is saved and its process group destroyed: gloo's threads now and
    then abort a rank in the interpreter's teardown ("terminate called without an active exception", seen in CI),
    and torchrun then reports a run that finished as failed. A plain run exits as usual."""
    if result.processes > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


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
    seed_file: Annotated[Optional[Path], typer.Option(help="Read the priming text from this file (UTF-8; - reads standard input) instead of --seed.",
                                                      show_default=False)] = None,
    length: Annotated[int, typer.Option("--length", "-n", help="Characters to generate per sample.")] = 1000,
    temperature: Annotated[float, typer.Option("--temperature", "-t", help="Sampling temperature; 0 means greedy (argmax).")] = 0.8,
    top_k: Annotated[Optional[int], typer.Option(help="Sample only from the k most likely characters.", show_default=False)] = None,
    top_p: Annotated[Optional[float], typer.Option(
        help="Nucleus sampling: the smallest set of characters with this total probability.", show_default=False)] = None,
    num_samples: Annotated[int, typer.Option(help="Independent samples, generated together as one batch.")] = 1,
    out_dir: Annotated[Optional[Path], typer.Option(help="Write each sample to DIR/sample-NNN.txt instead of stdout.", show_default=False)] = None,
    random_seed: Annotated[Optional[int], typer.Option(
        help="Seed for sampling: the same seed and options give the same text. Default: random.", show_default=False)] = None,
    stop: Annotated[Optional[list[str]], typer.Option(
        metavar="<str>",
        help="End a sample once it emits this string (included). Repeatable. In bash, --stop $'\\n\\n' ends at a blank line.",
        show_default=False)] = None,
    no_echo: Annotated[bool, typer.Option("--no-echo", help="Do not print the seed before the generated text.")] = False,
    drop_unknown: Annotated[bool, typer.Option(help="Drop seed characters the model does not know instead of failing.")] = False,
    members: MembersOption = None,
    device: DeviceOption = Device.AUTO,
    threads: ThreadsOption = None,
):
    """Generate text from a trained model and stream it to stdout."""
    with user_errors():
        from charrnn import api, data, files

        if out_dir is not None:
            files.output_dir(out_dir, "--out-dir")
        if seed_file is not None and seed:
            raise CharRNNError("both --seed and --seed-file given; give one")
        if seed_file is not None:
            seed = data.read_text(files.input_file(seed_file, "--seed-file"), fix="save the seed file as UTF-8")
        warn_about_threads(threads)
        model = api.load(checkpoint, device=device, threads=threads, members=members)
        pieces = model.stream_samples(seed, num_samples=num_samples, length=length, temperature=temperature,
                                      top_k=top_k, top_p=top_p, random_seed=random_seed, stop=stop or (),
                                      drop_unknown=drop_unknown)
        prefix = "" if no_echo else model.prepare_seed(seed, drop_unknown=drop_unknown)
        if out_dir is not None:
            _write_sample_files(out_dir, pieces, prefix, num_samples)
        else:
            _stream_samples(pieces, prefix, num_samples)  # a reader that goes away (`| head`): main() ends quietly


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
        help="Text to score (- reads standard input). Default: the validation split of the corpus the model was trained on.",
        show_default=False)] = None,
    checkpoint: CheckpointOption = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object with the results on stdout.")] = False,
    strict: Annotated[bool, typer.Option(help="Fail on characters the model does not know (default: skip and count them).")] = False,
    dynamic: Annotated[bool, typer.Option(help="Dynamic evaluation: adapt the weights to the text already scored (Krause et al. 2017).")] = False,
    dynamic_lr: Annotated[list[float], typer.Option(
        metavar="<float>",
        help="Learning rate of dynamic evaluation's RMS-normalised steps; give it again for more steps. Each step adapts "
             "its own copy of the model and the score is their predictions' fixed-share mixture, which follows whichever "
             "copy suits the text. The default pair, 3e-4 every 64 characters and 1.5e-3 every 16, beat every single "
             "copy on prose and code; one step every 64 runs about 3.5 times as fast.")] = EvalConfig.dynamic_lr,
    dynamic_share: Annotated[float, typer.Option(
        help="Dynamic evaluation with several steps: fraction of the mixture's weight spread evenly again after each "
             "character, so it can switch steps.")] = EvalConfig.dynamic_share,
    dynamic_window: Annotated[Optional[list[int]], typer.Option(
        metavar="<int>", show_default=False,
        help="Characters scored between two updates of a dynamic-evaluation copy: once for every step, or once per "
             "--dynamic-lr, in the same order. Shorter adapts faster and costs more (16: about 2.6 times 64). "
             "[default: 64 and 16 for the default pair; 64 for steps you choose]")] = None,
    dynamic_decay: Annotated[float, typer.Option(
        help="Dynamic evaluation: fraction of the way back to the trained weights at each update.")] = EvalConfig.dynamic_decay,
    streams: Annotated[int, typer.Option(help="Parallel streams the text is cut into (more is faster; each reads 256 chars of context first).")] = 64,
    device: DeviceOption = Device.AUTO,
    precision: Annotated[Precision, typer.Option(
        help="Arithmetic: fp32 (exact, comparable across machines), bf16 autocast (faster; within ~1e-4 bits/char), "
             "or auto (as train's --precision auto decides).")] = Precision.FP32,
    encoding: Annotated[str, typer.Option(help="Text encoding of FILE.")] = "utf-8",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    members: MembersOption = None,
    threads: ThreadsOption = None,
):
    """Measure how well a model predicts text: nats and bits per character, perplexity."""
    with user_errors():
        from charrnn import api, ui

        warn_about_threads(threads)
        model = api.load(checkpoint, device=device, threads=threads, members=members)
        source = model.text_source(file, encoding=encoding)
        progress = ui.CountProgress(source.size_hint(), "eval", quiet or json_output and not sys.stderr.isatty())
        try:
            result = model.evaluate(source, dynamic=dynamic, dynamic_lr=dynamic_lr, dynamic_share=dynamic_share,
                                    dynamic_window=dynamic_window, dynamic_decay=dynamic_decay, streams=streams, strict=strict,
                                    precision=precision, on_chars=progress)
            progress.finish()
        finally:
            progress.close()
        if json_output:
            sys.stdout.write(json.dumps(result.to_dict()) + "\n")
            return
        unknown = f" ({result.unknown_chars:,} unknown skipped)" if result.unknown_chars else ""
        rows = [("file", result.file), ("checkpoint", result.checkpoint), ("characters", f"{result.chars:,}{unknown}"),
                ("nats/char", f"{result.nats_per_char:.4f}"), ("bits/char", f"{result.bits_per_char:.4f}"),
                ("perplexity", f"{result.perplexity:.3f}"), ("speed", f"{result.chars_per_second:,.0f} chars/s")]
        if dynamic:
            steps = [(f"bits/char, step {lr:g} every {window} alone", f"{b:.4f}")
                     for lr, window, b in result.dynamic_steps_bits_per_char]
            rows[5:5] = [("static bits/char", f"{result.static_bits_per_char:.4f}")] + (steps if len(steps) > 1 else [])
        ui.key_value_table("charrnn eval", rows)


# Registered after train, sample and eval so that --help lists the commands in the order a user needs them.
app.command()(inspect_commands.info)
app.command()(inspect_commands.show)
app.command()(inspect_commands.export)
app.add_typer(corpus_app, name="corpus")


def main() -> None:
    app()
