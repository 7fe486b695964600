"""See inside a model: per-character surprise, top-5 predictions and cell activations over a text, as HTML.

Karpathy, Johnson & Fei-Fei 2015 ("Visualizing and Understanding Recurrent Networks") found char-LSTM cells
that track quotes, brackets and line position; `find_cells` ranks cells by correlation with such features.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from charrnn.config import Cell
from charrnn.errors import CharRNNError
from charrnn.model import CharRNN
from charrnn.sampling import FastStepper
from charrnn.vocab import Vocab

LN2 = math.log(2)


@dataclass
class Trace:
    """Per position i of a text: bits[i] is the loss on text[i] (NaN for i = 0, which has no prediction),
    top[i] the 5 likeliest characters for position i with probabilities, activations[i] (L, H) the cells."""

    text: str
    bits: list[float]
    top: list[list[tuple[str, float]]]
    activations: Tensor  # (N, L, H)


@torch.inference_mode()
def trace(model: CharRNN, vocab: Vocab, text: str) -> Trace:
    """Step through the text one character at a time (the sampler's stepper, which matches the fused forward)."""
    ids = torch.tensor(vocab.encode(text), dtype=torch.long)
    model.eval()
    stepper = FastStepper(model)
    state = stepper.initial_state(model.initial_state(1))
    bits = [float("nan")]
    top: list[list[tuple[str, float]]] = [[]]
    acts = []
    lstm = model.config.cell is Cell.LSTM
    for i in range(len(ids)):
        logits, state = stepper.step(ids[i: i + 1], state)
        # LSTM: tanh of the memory cell c (the "cell" of Karpathy et al.); GRU/RNN: the hidden state.
        acts.append(torch.stack([torch.tanh(layer[1][0]) if lstm else layer[0][0] for layer in state]))
        if i + 1 < len(ids):
            logp = logits[0].float().log_softmax(-1)
            bits.append(float(-logp[ids[i + 1]]) / LN2)
            p, k = logp.exp().topk(min(5, len(vocab)))
            top.append([(vocab.chars[int(c)], float(q)) for q, c in zip(p, k)])
    return Trace(text=text, bits=bits, top=top, activations=torch.stack(acts))


def text_features(text: str) -> dict[str, list[float]]:
    """Simple per-character features of source-like text: string literal, comment, bracket depth, column."""
    in_string = in_line_comment = in_block_comment = False
    depth = column = 0
    out: dict[str, list[float]] = {"inside string literal": [], "inside comment": [], "bracket depth": [],
                                   "position in line": []}
    prev = ""
    for ch in text:
        if in_line_comment and ch == "\n":
            in_line_comment = False
        elif in_block_comment and prev == "*" and ch == "/":
            in_block_comment = False
        elif not (in_line_comment or in_block_comment):
            if ch == '"' and prev != "\\":
                in_string = not in_string
            elif not in_string and prev == "/" and ch == "/":
                in_line_comment = True
            elif not in_string and prev == "/" and ch == "*":
                in_block_comment = True
            elif not in_string and ch in "([{":
                depth += 1
            elif not in_string and ch in ")]}":
                depth = max(0, depth - 1)
            if ch == "\n":
                in_string = False
        column = 0 if ch == "\n" else column + 1
        out["inside string literal"].append(float(in_string))
        out["inside comment"].append(float(in_line_comment or in_block_comment))
        out["bracket depth"].append(float(depth))
        out["position in line"].append(float(column))
        prev = ch
    return out


@dataclass(frozen=True)
class CellMatch:
    feature: str
    layer: int
    cell: int
    correlation: float


def find_cells(t: Trace, top: int = 5) -> list[CellMatch]:
    """For each feature, the cells whose activation correlates most strongly (Pearson, by |r|)."""
    acts = t.activations.reshape(len(t.text), -1).double()  # (N, L·H)
    hidden = t.activations.shape[2]
    acts = acts - acts.mean(0)
    matches = []
    for name, values in text_features(t.text).items():
        f = torch.tensor(values, dtype=torch.float64)
        f = f - f.mean()
        denom = acts.norm(dim=0) * f.norm()
        if float(f.norm()) == 0:
            continue
        r = (acts * f[:, None]).sum(0) / denom.clamp(min=1e-12)
        for idx in r.abs().argsort(descending=True)[:top].tolist():
            matches.append(CellMatch(name, idx // hidden, idx % hidden, float(r[idx])))
    return matches


def parse_cell(spec: str, layers: int, hidden: int) -> tuple[int, int]:
    try:
        layer, cell = (int(x) for x in spec.split(":"))
    except ValueError:
        raise CharRNNError(f"--cell {spec!r}: expected LAYER:CELL, e.g. 1:42") from None
    if not (0 <= layer < layers and 0 <= cell < hidden):
        raise CharRNNError(f"--cell {spec}: the model has layers 0..{layers - 1} and cells 0..{hidden - 1}")
    return layer, cell


def _colour(value: float, lo: float, hi: float, diverging: bool) -> str:
    """White → red for surprise; blue ← white → red for signed activations."""
    if math.isnan(value):
        return "#ffffff"
    if diverging:
        x = max(-1.0, min(1.0, value / max(abs(lo), abs(hi), 1e-9)))
        r, g, b = (255, int(255 * (1 - x)), int(255 * (1 - x))) if x >= 0 else (int(255 * (1 + x)), int(255 * (1 + x)), 255)
    else:
        x = max(0.0, min(1.0, (value - lo) / (hi - lo or 1)))
        r, g, b = 255, int(255 * (1 - x)), int(255 * (1 - 0.85 * x))
    return f"#{r:02x}{g:02x}{b:02x}"


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
#text {{ font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; line-height: 1.35; }}
#text span:hover {{ outline: 1px solid #333; }}
#tip {{ position: fixed; display: none; background: #222; color: #fff; padding: 4px 8px; border-radius: 4px;
        font: 12px ui-monospace, monospace; white-space: pre; pointer-events: none; }}
.legend {{ display: flex; align-items: center; gap: .5em; margin: .5em 0 1em; font-size: 13px; }}
.bar {{ width: 240px; height: 12px; background: linear-gradient(to right, {bar}); border: 1px solid #ccc; }}
</style></head><body>
<h3>{title}</h3>
<div class="legend">{lo_label}<div class="bar"></div>{hi_label} <span>{legend}</span></div>
<div id="text">{spans}</div>
<div id="tip"></div>
<script>
const TOP = {top_json};
const VALUE = {value_json};
const tip = document.getElementById("tip");
document.getElementById("text").addEventListener("mousemove", (e) => {{
  const i = e.target.dataset ? e.target.dataset.i : undefined;
  if (i === undefined) {{ tip.style.display = "none"; return; }}
  const lines = ["{value_name}: " + VALUE[i]];
  for (const [c, p] of TOP[i]) lines.push(JSON.stringify(c) + "  " + (100 * p).toFixed(1) + "%");
  tip.textContent = lines.join("\\n");
  tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px"; tip.style.display = "block";
}});
document.getElementById("text").addEventListener("mouseleave", () => {{ tip.style.display = "none"; }});
</script></body></html>
"""


def render(t: Trace, *, title: str, cell: tuple[int, int] | None = None) -> str:
    """One self-contained HTML page: every character once, escaped, coloured by surprise or by a cell."""
    if cell is None:
        values = t.bits
        lo, hi = 0.0, 8.0  # a fixed scale, so pages of different texts and models compare
        diverging, name, legend = False, "bits", "loss on each character, in bits (hover: the model's top-5 guesses for it)"
        lo_label, hi_label, bar = "0 bits", "≥ 8 bits", "#ffffff, #ff2626"
    else:
        layer, index = cell
        values = [float(v) for v in t.activations[:, layer, index]]
        lo, hi, diverging, name = -1.0, 1.0, True, f"cell {layer}:{index}"
        legend, lo_label, hi_label, bar = f"activation of cell {layer}:{index}", "−1", "+1", "#0000ff, #ffffff, #ff0000"
    spans = "".join(f'<span data-i="{i}" style="background:{_colour(v, lo, hi, diverging)}">{html.escape(ch)}</span>'
                    for i, (ch, v) in enumerate(zip(t.text, values)))
    top_json = json.dumps([[[c, round(p, 4)] for c, p in row] for row in t.top], ensure_ascii=True)
    value_json = json.dumps([None if math.isnan(v) else round(v, 3) for v in values])
    return PAGE.format(title=html.escape(title), spans=spans, top_json=top_json.replace("</", "<\\/"),
                       value_json=value_json, value_name=name, legend=html.escape(legend),
                       lo_label=lo_label, hi_label=hi_label, bar=bar)


def loss_chart_svg(history: dict) -> str:
    """Training and validation bits/char against steps (left) and wall-clock minutes (right), as an SVG."""
    train = [(s, v / LN2) for s, v in history["train"]]
    val = [(s, v / LN2, t / 60) for s, v, t in history["val"]]
    if not train:
        raise CharRNNError("the checkpoint has no loss history to plot; train it for a few steps first")
    # Smooth the per-step training loss (it is noisy) with a moving average over 2% of the steps.
    k = max(1, len(train) // 50)
    smooth = [(train[i][0], sum(v for _, v in train[max(0, i - k + 1): i + 1]) / len(train[max(0, i - k + 1): i + 1]))
              for i in range(len(train))]
    every = max(1, len(smooth) // 400)
    smooth = smooth[::every] + [smooth[-1]]
    values = [v for _, v in smooth] + [v for _, v, _ in val]
    lo, hi = min(values), max(values)
    lo, hi = lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1)
    W, H, pad = 360, 240, 40

    def panel(x0: float, points_by_series: list[tuple[str, list[tuple[float, float]]]], xmax: float, xlabel: str) -> str:
        def xy(x, y):
            return f"{x0 + pad + (W - pad - 10) * x / (xmax or 1):.1f},{10 + (H - pad - 10) * (hi - y) / (hi - lo):.1f}"
        parts = [f'<rect x="{x0 + pad}" y="10" width="{W - pad - 10}" height="{H - pad - 10}" fill="none" stroke="#999"/>',
                 f'<text x="{x0 + W / 2}" y="{H - 8}" text-anchor="middle">{xlabel}</text>']
        for frac in (0.0, 0.5, 1.0):
            y = lo + (hi - lo) * frac
            parts.append(f'<text x="{x0 + pad - 4}" y="{10 + (H - pad - 10) * (1 - frac) + 4:.1f}" text-anchor="end">{y:.2f}</text>')
        parts.append(f'<text x="{x0 + W - 10}" y="{H - pad + 14}" text-anchor="end">{xmax:.4g}</text>')
        for colour, pts in points_by_series:
            if pts:
                parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{" ".join(xy(x, y) for x, y in pts)}"/>')
        return "".join(parts)

    steps_max = max(smooth[-1][0], val[-1][0] if val else 0)
    left = panel(0, [("#1f77b4", smooth), ("#d62728", [(s, v) for s, v, _ in val])], steps_max, "step")
    right = panel(W, [("#d62728", [(m, v) for _, v, m in val])], val[-1][2] if val else 1.0, "minutes (validation)")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 20}" font-family="sans-serif" font-size="11">'
            f'<text x="{pad}" y="{H + 14}" fill="#1f77b4">training bits/char (smoothed)</text>'
            f'<text x="{pad + 200}" y="{H + 14}" fill="#d62728">validation bits/char</text>{left}{right}</svg>\n')
