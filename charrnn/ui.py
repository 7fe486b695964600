"""Everything a person sees on stderr: progress bars, messages, tables and small charts. Never stdout."""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.console import Console

err = Console(stderr=True, highlight=False)


def message(text: str) -> None:
    err.print(text, markup=False, soft_wrap=True)


class TrainProgress:
    """A tqdm bar over the run's budget (steps, epochs or minutes, whichever ends first) with loss and speed."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.bar = None

    def __call__(self, p) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=1000, desc="train", unit="‰", dynamic_ncols=True,
                            bar_format="{desc} {percentage:3.0f}%|{bar:24}| {elapsed}<{remaining} {postfix}")
        val = f" val {p.val_bits:.3f} bits/char" if p.val_bits is not None else ""
        total = f"/{p.total_steps}" if p.total_steps else ""
        self.bar.set_postfix_str(f"step {p.step}{total} loss {p.train_nats:.3f}{val} {p.chars_per_second:,.0f} chars/s",
                                 refresh=False)
        self.bar.update(int(p.fraction_done * 1000) - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CountProgress:
    """A tqdm bar over a known number of characters (eval, show)."""

    def __init__(self, total: int, desc: str, quiet: bool):
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="char", unit_scale=True, dynamic_ncols=True)

    def __call__(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

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
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    err.print(table)






def show_info(summary: dict) -> None:
    """`charrnn info` for people: configuration, vocabulary and loss history charts, on stderr."""
    m = summary["model"]
    corpus = summary.get("corpus") or {}
    best = summary["best_val_bits_per_char"]
    vocab = summary["vocab"].encode("unicode_escape").decode("ascii")
    rows = [
        ("checkpoint", summary["checkpoint"]),
        ("model", f"{m['cell']} {m['layers']} x {m['hidden']}, embedding {m['embedding']}, "
                  f"skips {'on' if m['skip'] else 'off'}, dropout {m['dropout']}"),
        ("parameters", f"{summary['parameters']:,}"),
        ("vocabulary", f"{summary['vocab_size']} characters: {vocab[:300]}"),
        ("trained", f"{summary['steps']} steps, {summary['epochs'] or 0:.2f} epochs, {summary['minutes']:.1f} min"
                    f"{', in ' + summary['arithmetic'] if summary.get('arithmetic') else ''}"),
        ("best validation", f"{best:.4f} bits/char" if best is not None else "n/a"),
        ("corpus", f"{corpus.get('name', '?')}: {corpus.get('path', '?')} ({corpus.get('chars', 0):,} chars)"),
        ("fingerprint", f"sha256 {corpus.get('fingerprint', '?')}"),
    ]
    history = summary["history"]
    log2 = math.log(2)
    if history["train"]:
        train_bits = [v / log2 for _, v in history["train"]]
        rows.append(("train bits/char", f"{sparkline(train_bits)}  {train_bits[0]:.2f} → {train_bits[-1]:.2f}"))
    if history["val"]:
        val_bits = [v / log2 for _, v, _ in history["val"]]
        rows.append(("val bits/char", f"{sparkline(val_bits)}  {val_bits[0]:.2f} → {val_bits[-1]:.2f}"))
    key_value_table("charrnn info", rows)
