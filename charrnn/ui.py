"""What a person sees: progress bars and messages on stderr; a command's report (tables, small charts) on stdout.

A report printed to a pipe or a file has no colour codes and is not wrapped, so `charrnn info run > info.txt`
and `charrnn corpus list | grep cpp` work line by line.
"""

from __future__ import annotations

import math
import sys
import time

from rich.console import Console

from charrnn.config import bits

err = Console(stderr=True, highlight=False, emoji=False)  # no emoji codes: "--cell -1:-1:" stays as typed
UNWRAPPED_WIDTH = 10_000  # a table for a pipe or file: as wide as its content, never folded at 80 columns


def report_console() -> Console:
    """A console on stdout, made per report so that it sees the stdout in force (a test runner swaps it)."""
    terminal = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, emoji=False, width=None if terminal else UNWRAPPED_WIDTH,
                   color_system="auto" if terminal else None)


def message(text: str) -> None:
    err.print(text, markup=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class _Tenths:
    """For stderr that is not a terminal (a log file, nohup, CI): due once per tenth of the work, so a log gets
    ten plain lines instead of a bar's thousands of carriage-return redraws."""

    def __init__(self):
        self.shown = 0

    def due(self, fraction: float) -> bool:
        tenths = min(10, int(fraction * 10 + 1e-9))
        if tenths <= self.shown:
            return False
        self.shown = tenths
        return True


class TrainProgress:
    """A tqdm bar over the run's budget (steps, epochs or minutes, whichever ends first) with loss and speed; a
    plain line per tenth of the budget when stderr is not a terminal."""

    def __init__(self, quiet: bool, *, terminal: bool | None = None):
        self.quiet = quiet
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.bar = None
        self._tenths = _Tenths()

    def __call__(self, p) -> None:
        if self.quiet:
            return
        if not self.terminal:
            if self._tenths.due(p.fraction_done):
                left = p.elapsed * (1 - p.fraction_done) / p.fraction_done
                message(f"train {p.fraction_done:4.0%} {_clock(p.elapsed)}<{_clock(left)} {self._status(p)}")
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=1000, desc="train", unit="‰", dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar:24}| {elapsed}<{remaining}{postfix}")
        self.bar.set_postfix_str(self._status(p), refresh=False)
        self.bar.update(int(p.fraction_done * 1000) - self.bar.n)

    @staticmethod
    def _status(p) -> str:
        val = f" val {p.val_bits:.3f}" if p.val_bits is not None else ""
        total = f"/{p.total_steps}" if p.total_steps else ""
        return f"step {p.step}{total} bits/char: train {bits(p.train_nats):.3f}{val} {p.chars_per_second:,.0f} chars/s"

    def message(self, text: str) -> None:
        """A log line (or a sample) printed above the bar, which is redrawn below it."""
        if self.bar is None:
            message(text)
        else:
            self.bar.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CountProgress:
    """A tqdm bar over a known number of characters (eval), or a plain line per tenth of them when stderr is not
    a terminal. It appears with the first characters scored, so an error found before then (an empty file, an
    option out of range) is the only line on stderr."""

    def __init__(self, total: int | None, desc: str, quiet: bool, *, terminal: bool | None = None):
        self.bar = None
        self.total, self.desc, self.quiet = total, desc, quiet
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._tenths = _Tenths()
        self._done = 0
        self._start: float | None = None

    def __call__(self, n: int) -> None:
        if self.quiet:
            return
        if not self.terminal:
            self._start = self._start or time.perf_counter()
            self._done += n
            if self.total and self._tenths.due(self._done / self.total):
                self._line(min(1.0, self._done / self.total))
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="char", unit_scale=True, dynamic_ncols=True)
        self.bar.update(n)

    def _line(self, fraction: float) -> None:
        seconds = time.perf_counter() - self._start
        message(f"{self.desc} {fraction:4.0%} {_clock(seconds)} {self._done:,} chars, {self._done / max(seconds, 1e-9):,.0f} chars/s")

    def finish(self) -> None:
        """The work is done: show 100%. The total is a guess (a file's bytes, not its characters; the first
        character is context, not scored), so the count alone may stop short of it."""
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.total = self.bar.n
            self.bar.refresh()
        elif not self.terminal and self._done and self._tenths.due(1.0):
            self._line(1.0)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def sparkline(values: list[float], width: int = 60) -> str:
    """A one-line chart of values (lowest ▁ to highest █), resampled to `width`."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [values[int(i * step)] for i in range(width)]
    lo, hi = min(values), max(values)
    ticks = "▁▂▃▄▅▆▇█"
    span = hi - lo or 1.0
    return "".join(ticks[min(7, int((v - lo) / span * 7.999))] for v in values)


def key_value_table(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column report on stdout."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(Text(key), Text(value))  # Text: a path or vocabulary with [brackets] is not rich markup
    print_report(table)


def print_report(renderable) -> None:
    report_console().print(renderable)


def readable_char(c: str) -> str:
    """A character as a report shows it: itself if printable (é, Ω, 日), else its escape (\\t, \\n, \\x00)."""
    return c if c.isprintable() and c != "\\" else c.encode("unicode_escape").decode("ascii")


def _members(model_config: dict) -> str:
    """An ensemble's size for the model line; nothing for one network (every checkpoint before session 50)."""
    members = model_config.get("members", 1)
    return f"; {members} networks averaged (--members {members})" if members > 1 else ""


def _regularisation(model: dict) -> str:
    """The regularisers a model trained with, by their option names; planned ones (weight drop) included."""
    parts = [f"{name} {model[key]:g}" for key, name in (("dropout", "dropout"), ("embedding_dropout", "embedding dropout"),
                                                         ("weight_drop", "weight drop")) if model.get(key)]
    if parts and model.get("variational"):
        parts.append("variational masks")
    return ", ".join(parts) or "no dropout or weight drop"


def _settings(train: dict) -> str:
    """How a run trained (what the plan chose and the user set), as `charrnn train`'s options name it."""
    reading = f"shuffled segments of {train['segment_len']}" if train.get("segment_len") else "char-rnn's layout"
    return (f"batch {train['batch_size']} x {train['seq_len']} characters, {reading}, lr {train['lr']:g} "
            f"({train.get('schedule', 'cosine')}), weight decay {train.get('weight_decay', 0):g}")


def show_info(summary: dict) -> None:
    """`charrnn info` for people: configuration, vocabulary and loss history charts, on stdout."""
    m = summary["model"]
    corpus = summary.get("corpus") or {}
    best = summary["best_val_bits_per_char"]
    shown = 300  # characters of a large vocabulary (CJK text has thousands)
    vocab = "".join(readable_char(c) for c in summary["vocab"][:shown]) + (" …" if len(summary["vocab"]) > shown else "")
    rows = [
        ("checkpoint", summary["checkpoint"]),
        ("model", f"{m['cell']} {m['layers']} x {m['hidden']}, embedding {m['embedding']}, "
                  f"skips {'on' if m['skip'] else 'off'}, {_regularisation(m)}{_members(m)}"),
        ("parameters", f"{summary['parameters']:,}"),
        *([("settings", _settings(summary["train_config"]))] if summary.get("train_config") else []),
        ("vocabulary", f"{summary['vocab_size']} characters: {vocab}"),
        ("trained", f"{summary['steps'] or 0:,} steps, {summary['epochs'] or 0:.2f} epochs, {summary['minutes']:.1f} min"
                    f"{', in ' + summary['arithmetic'] if summary.get('arithmetic') else ''}"),
        ("best validation", f"{best:.4f} bits/char" if best is not None else "n/a"),
        ("corpus", f"{corpus.get('name', '?')}: {corpus.get('path', '?')} ({corpus.get('chars', 0):,} chars)"),
        ("fingerprint", f"sha256 {corpus.get('fingerprint', '?')}"),
    ]
    history = summary["history"]
    if history["train"]:
        train_bits = [bits(v) for _, v in history["train"]]
        rows.append(("train bits/char", f"{sparkline(train_bits)}  {train_bits[0]:.2f} → {train_bits[-1]:.2f}"))
    if history["val"]:
        val_bits = [bits(v) for _, v, _ in history["val"]]
        rows.append(("val bits/char", f"{sparkline(val_bits)}  {val_bits[0]:.2f} → {val_bits[-1]:.2f}"))
    if history.get("samples"):
        step, text, _ = history["samples"][-1]
        rows.append((f"sample at step {step}", text))
    key_value_table("charrnn info", rows)
