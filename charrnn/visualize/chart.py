"""A run's loss history as an SVG chart: bits/char against steps and against minutes."""

from __future__ import annotations

from charrnn.config import bits
from charrnn.errors import CharRNNError


def loss_chart_svg(history: dict) -> str:
    """Training and validation bits/char against steps (left) and wall-clock minutes (right), as an SVG."""
    train = [(s, bits(v)) for s, v in history["train"]]
    val = [(s, bits(v), t / 60) for s, v, t in history["val"]]
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
