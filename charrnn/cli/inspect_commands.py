"""`charrnn info` and `charrnn show`: look at a checkpoint, and at what its model sees in a text."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.cli.common import (
    CheckpointAlias,
    CheckpointArgument,
    CheckpointOption,
    DeviceOption,
    ForceOption,
    MembersOption,
    one_checkpoint,
    user_errors,
)
from charrnn.config import Device
from charrnn.errors import CharRNNError


def info(
    checkpoint: CheckpointArgument = None,
    checkpoint_option: CheckpointAlias = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the information as one JSON object on stdout.")] = False,
    plot: Annotated[Optional[Path], typer.Option(help="Also write a chart of training and validation bits/char (SVG).", show_default=False)] = None,
):
    """Show a checkpoint's model, vocabulary, training progress and loss history."""
    with user_errors():
        from charrnn import api, files, ui

        if plot is not None:
            if plot.suffix.lower() != ".svg":
                raise CharRNNError(f"--plot {plot}: only SVG is supported; name the file with .svg")
            files.output_file(plot, "--plot")
        summary = api.load(one_checkpoint(checkpoint, checkpoint_option), device="cpu").summary()
        if plot is not None:
            from charrnn.visualize.chart import loss_chart_svg

            files.atomic_write_text(plot, loss_chart_svg(summary["history"]))
            ui.message(f"wrote {plot}")
        if json_output:
            sys.stdout.write(json.dumps(summary) + "\n")
            return
        ui.show_info(summary)


def show(
    file: Annotated[Path, typer.Argument(help="The text to look at (UTF-8; - reads standard input).", show_default=False)],
    checkpoint: CheckpointOption = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML page to write (self-contained).")] = Path("page.html"),
    max_chars: Annotated[int, typer.Option(help="Show at most this many characters from the start of FILE.")] = 20_000,
    cell: Annotated[Optional[str], typer.Option("--cell",
        help="Colour by the activation of cell N of layer L (L:N, from 0) instead of by surprise.", show_default=False)] = None,
    find_cells: Annotated[bool, typer.Option("--find-cells",
        help="Rank cells by correlation with string/comment/bracket-depth/column features; list them on stderr.")] = False,
    drop_unknown: Annotated[bool, typer.Option(help="Drop characters the model does not know instead of failing.")] = False,
    force: ForceOption = False,
    device: DeviceOption = Device.AUTO,
):
    """Write an HTML page of a text coloured by the model's surprise (or a cell's activation), with its top-5 guesses on hover."""
    with user_errors():
        from charrnn import api, data, files, ui
        from charrnn.visualize import cells, page

        if max_chars < 1:
            raise CharRNNError(f"--max-chars must be at least 1, got {max_chars}")
        files.output_page(out, "--out", force=force)
        text = data.read_text(files.input_file(file, "FILE"), max_chars=max_chars)
        model = api.load(checkpoint, device=device)
        chosen = cells.parse_cell(cell, model.config.layers, model.config.hidden) if cell else None
        t = model.trace(text, drop_unknown=drop_unknown)
        if find_cells:
            for m in cells.find_cells(t):
                ui.message(f"{m.feature:>22}: cell {m.layer}:{m.cell}  r = {m.correlation:+.3f}")
        files.atomic_write_text(out, page.render(t, title=f"{file.name} · {model.path}", cell=chosen))
        ui.message(f"wrote {out} ({len(t.text):,} characters)")


def export(
    checkpoint: CheckpointArgument = None,
    checkpoint_option: CheckpointAlias = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="The page to write. Default: <run name>.html.", show_default=False)] = None,
    weights: Annotated[str, typer.Option(help="How the page stores the weights: int8 (one scale per row; smallest), fp16 or fp32.")] = "int8",
    seed: Annotated[Optional[str], typer.Option("--seed", "-s", help="The seed the page opens with. Default: one that suits the corpus.",
                                                show_default=False)] = None,
    members: MembersOption = None,
    force: ForceOption = False,
):
    """Write the model as one self-contained web page that generates text in the browser (share it as a file)."""
    with user_errors():
        from charrnn import api, files, ui

        model = api.load(one_checkpoint(checkpoint, checkpoint_option), device="cpu", members=members)
        out = files.output_page(out or Path(f"{model.name}.html"), "--out", force=force)
        page = files.utf8(model.export_html(weights=weights, seed=seed))
        files.atomic_write(out, lambda f: f.write(page))
        ui.message(f"wrote {out} ({len(page) / 1e6:.2f} MB, {weights} weights); open it in a browser")
