"""One self-contained HTML page of a text, each character coloured by the model's surprise or by one cell."""

from __future__ import annotations

import html
import json
import math
from string import Template

from charrnn.files import PAGE_MARK
from charrnn.visualize.trace import Trace

# The page as it is served, with $name placeholders (string.Template), so its CSS and JS read as written.
PAGE = Template("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">${mark}<title>${title}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; }
#text { font-family: ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; line-height: 1.35; }
#text span:hover { outline: 1px solid #333; }
#tip { position: fixed; display: none; background: #222; color: #fff; padding: 4px 8px; border-radius: 4px;
        font: 12px ui-monospace, monospace; white-space: pre; pointer-events: none; }
.legend { display: flex; align-items: center; gap: .5em; margin: .5em 0 1em; font-size: 13px; }
.bar { width: 240px; height: 12px; background: linear-gradient(to right, ${bar}); border: 1px solid #ccc; }
</style></head><body>
<h3>${title}</h3>
<div class="legend">${lo_label}<div class="bar"></div>${hi_label} <span>${legend}</span></div>
<div id="text">${spans}</div>
<div id="tip"></div>
<script>
const TOP = ${top_json};
const VALUE = ${value_json};
const tip = document.getElementById("tip");
document.getElementById("text").addEventListener("mousemove", (e) => {
  const i = e.target.dataset ? e.target.dataset.i : undefined;
  if (i === undefined) { tip.style.display = "none"; return; }
  const lines = ["${value_name}: " + VALUE[i]];
  for (const [c, p] of TOP[i]) lines.push(JSON.stringify(c) + "  " + (100 * p).toFixed(1) + "%");
  tip.textContent = lines.join("\\n");
  tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px"; tip.style.display = "block";
});
document.getElementById("text").addEventListener("mouseleave", () => { tip.style.display = "none"; });
</script></body></html>
""")


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
    return PAGE.substitute(mark=PAGE_MARK, title=html.escape(title), spans=spans, top_json=top_json.replace("</", "<\\/"),
                           value_json=value_json, value_name=name, legend=html.escape(legend),
                           lo_label=lo_label, hi_label=hi_label, bar=bar)
