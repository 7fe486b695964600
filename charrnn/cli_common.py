"""What every command module of the command line shares: error mapping, options, checkpoint loading."""

from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.errors import CharRNNError

RUNS_DIR = Path("runs")


class Device(str, Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


@contextmanager
def user_errors():
    """CharRNNError becomes one stderr line and its exit code; Ctrl-C exits 130 without a traceback. An OSError
    that no check foresaw (a disk that fills, a file that vanishes) still gets one line naming the file."""
    from charrnn import ui

    try:
        yield
    except CharRNNError as e:
        ui.message(f"error: {e.message}")
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        ui.message("interrupted")
        raise typer.Exit(130) from None
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() ends quietly
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        ui.message(f"error: {where}{e.strerror or e}; check the path, its permissions and the free space")
        raise typer.Exit(1) from None


def given_options(ctx: typer.Context) -> frozenset[str]:
    """The options the user typed (not defaults): on --resume only these override the checkpoint."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return frozenset(name for name, source in sources.items() if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"))


CheckpointOption = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", help="A .pt file or a run directory (its best.pt). Default: the most recent run under runs/.")]
DeviceOption = Annotated[Device, typer.Option(help="Where to run: auto picks cuda, then mps, then cpu.")]


def load_checkpoint(path: Path | None):
    """(resolved path, checkpoint dict) for --checkpoint, or the newest run under runs/ when it is omitted."""
    from charrnn import checkpoint as ckpt

    resolved = ckpt.resolve(path) if path is not None else ckpt.latest_run(RUNS_DIR)
    return resolved, ckpt.load(resolved)
