"""Which cells track which feature of the text (Pearson correlation), and naming one cell as LAYER:CELL."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charrnn.errors import CharRNNError
from charrnn.visualize.features import text_features
from charrnn.visualize.trace import Trace


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
