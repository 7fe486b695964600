"""What every command module of the command line shares: error mapping, the broken-pipe guard, options."""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from charrnn.config import Device
from charrnn.errors import CharRNNError


@contextmanager
def user_errors():
    """CharRNNError becomes one stderr line and its exit code; Ctrl-C exits 130 without a traceback; a closed
    stdout ends the command quietly with 0 (the one broken-pipe guard). An OSError
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
        # The reader went away (`| head`): stop, exit 0, and point stdout at devnull so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        ui.message(f"error: {where}{e.strerror or e}; check the path, its permissions and the free space")
        raise typer.Exit(1) from None
    except (MemoryError, RuntimeError) as e:
        if not _out_of_memory(e):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(e))
        size = f" (an allocation of {_bytes(int(asked[1]))} failed)" if asked else ""
        ui.message(f"error: out of memory{size}; the model, batch or sample count is too large for this machine: "
                   "lower --hidden, --layers, --batch-size, --num-samples or --streams")
        raise typer.Exit(1) from None


def _bytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB"


def _out_of_memory(e: BaseException) -> bool:
    """Python's MemoryError, torch's CPU allocator failing, or CUDA/MPS out of memory (torch not imported here)."""
    text = str(e)
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or "can't allocate memory" in text
            or "out of memory" in text.lower())


def given_options(ctx: typer.Context) -> frozenset[str]:
    """The options the user typed (not defaults): on --resume only these override the checkpoint."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}
    return frozenset(name for name, source in sources.items() if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT"))


CheckpointOption = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", help="A .pt file or a run directory (its best.pt). Default: the most recent run under runs/.")]
# info and export take the checkpoint as their argument; -c names it too, as for sample, eval and show.
CheckpointArgument = Annotated[Optional[Path], typer.Argument(
    help="A .pt file or a run directory. Default: the most recent run.", show_default=False)]
CheckpointAlias = Annotated[Optional[Path], typer.Option(
    "--checkpoint", "-c", help="The same as the CHECKPOINT argument, as sample and eval take it.", show_default=False)]
DeviceOption = Annotated[Device, typer.Option(help="Where to run: auto picks cuda, then mps, then cpu.")]
ForceOption = Annotated[bool, typer.Option(help="Replace --out even if it is not a page charrnn wrote.")]


def one_checkpoint(argument: Path | None, option: Path | None) -> Path | None:
    """The checkpoint named by the argument or by -c; both, naming different files, is an error."""
    if argument is not None and option is not None and argument != option:
        raise CharRNNError(f"two checkpoints given ({argument} and -c {option}); give one")
    return argument if argument is not None else option


MembersOption = Annotated[Optional[int], typer.Option(
    metavar="<int>", show_default=False,
    help="Use only the first K of an ensemble's members (see train --members): K/N of the work per character and of "
         "an exported page's size, predicting a little worse ('charrnn eval --members K' measures how much). "
         "Default: all.")]
ThreadsOption = Annotated[Optional[int], typer.Option(
    help="CPU threads. Default: torch's choice (the physical cores).", show_default=False)]


def warn_about_threads(threads: int | None) -> None:
    """sample and eval: a warning on stderr when --threads exceeds the CPUs (train's log says it itself)."""
    from charrnn import devices, ui

    if warning := devices.threads_warning(threads):
        ui.message(warning)
