"""`charrnn corpus list|build`: the built-in corpora."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from charrnn.cli.common import user_errors
from charrnn.errors import CharRNNError

corpus_app = typer.Typer(help="Built-in corpora, assembled from files every installation has.", no_args_is_help=True)


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
        from rich.text import Text

        table = Table("name", "chars", "distinct", "files", "cached", "description", title="built-in corpora", title_justify="left")
        for i in infos:
            table.add_row(i.name, f"{i.chars:,}" if i.chars else "?", str(i.distinct or "?"), f"{i.files:,}" if i.files else "?",
                          "yes" if i.cached else "no (charrnn corpus list --build)", Text(i.description))
        ui.print_report(table)


@corpus_app.command("build")
def corpus_build(
    name: Annotated[str, typer.Argument(help="A built-in corpus name (cpp, python).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the corpus text to this file.")],
):
    """Assemble a built-in corpus and write it to a file (the exact text `charrnn train NAME` uses)."""
    with user_errors():
        import shutil

        from charrnn import corpora, files, ui

        if name not in corpora.names():
            raise CharRNNError(f"{name}: not a built-in corpus (built-in: {', '.join(corpora.names())})")
        files.output_file(out, "--out")
        source = corpora.build(name)
        with open(source, "rb") as text:
            files.atomic_write(out, lambda f: shutil.copyfileobj(text, f))
        ui.message(f"wrote {out} ({source.stat().st_size:,} bytes)")
