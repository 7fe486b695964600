"""The command line: a Typer app over charrnn.api (app: train, sample, eval; inspect_commands: info, show;
corpus: corpus list|build). `main` is the `charrnn` console script."""

from charrnn.cli.app import app, main

__all__ = ["app", "main"]
