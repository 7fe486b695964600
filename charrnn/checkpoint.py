"""Checkpoints as plain data: atomic writes, safe loads (weights_only), run-directory naming and locking."""

from __future__ import annotations

import errno
import os
import pickle
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch

from charrnn import files
from charrnn.config import ModelConfig, bits
from charrnn.errors import CharRNNError
from charrnn.model import Network, build, with_even_embedding
from charrnn.vocab import Vocab

FORMAT_VERSION = 1
LATEST = "latest.pt"
BEST = "best.pt"
LOCK = ".lock"


def save(path: Path, state: dict) -> None:
    """Write atomically (charrnn.files.atomic_write): a crash or a full disk mid-write leaves the old file intact."""
    path = Path(path)
    existed = path.is_file()
    try:
        files.atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError from its zip writer
        reason = "no space left on the device" if _is_disk_full(e) else str(e).splitlines()[0]
        kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
        raise CharRNNError(f"could not write checkpoint {path}: {reason}; free space or choose another --out; "
                           f"{kept}") from None


def _is_disk_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e) or "file write failed" in str(e)


def _other_checkpoint(broken: Path) -> str:
    """What to do about an unreadable checkpoint: its run's other file holds the same kind of state."""
    if broken.name == BEST:
        return f"use the run's {LATEST} (--checkpoint {broken.parent / LATEST})"
    if broken.name == LATEST:
        return (f"the run's {BEST} holds a whole run state too, from its best step: use it (--checkpoint {broken.parent / BEST}), "
                f"or copy it over {LATEST} to --resume from there")
    return "use another checkpoint"


def load(path: Path) -> dict:
    """Load with weights_only=True: tensors and plain containers only, so a stranger's file cannot run code."""
    path = Path(path)
    if not path.exists():
        raise CharRNNError(f"{path}: no such checkpoint; train one with `charrnn train` or check the path")
    if path.is_dir():
        raise CharRNNError(f"{path}: is a directory without {BEST} or {LATEST}; pass a run directory or a .pt file")
    if not zipfile.is_zipfile(path):  # torch.save always writes a zip archive; a bare pickle is never unpickled
        raise CharRNNError(f"{path}: not a charrnn checkpoint (not a PyTorch archive); it may be truncated or "
                           f"corrupt; {_other_checkpoint(path)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        if "Weights only load failed" in first or "Unsupported" in str(e):
            raise CharRNNError(f"{path}: refused: the file holds pickled objects beyond plain data, which could "
                               "run code; only load checkpoints written by charrnn") from None
        raise CharRNNError(f"{path}: not a charrnn checkpoint (unreadable: {first[:120]}); "
                           "it may be truncated or corrupt, use another checkpoint") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, KeyError) as e:
        raise CharRNNError(f"{path}: not a charrnn checkpoint or truncated ({type(e).__name__}); "
                           f"{_other_checkpoint(path)}") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CharRNNError(f"{path}: not a charrnn checkpoint (no format_version); use a file written by charrnn train")
    version = state["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CharRNNError(f"{path}: checkpoint format {version} is newer than this charrnn understands "
                           f"({FORMAT_VERSION}); upgrade charrnn")
    for key in ("model_config", "vocab", "model"):
        if key not in state:
            raise CharRNNError(f"{path}: checkpoint lacks '{key}'; it is incomplete, use another checkpoint")
    return state


def restore_model(state: dict, device: torch.device | str = "cpu") -> tuple[Network, Vocab]:
    """A loaded checkpoint's model on `device` in eval mode, and its vocabulary: the one way back from plain data."""
    config = ModelConfig.from_dict(state["model_config"])
    try:
        config, weights = with_even_embedding(config, state["model"])
        model = build(config)
        model.load_state_dict(weights)
    except (RuntimeError, KeyError, TypeError, IndexError) as e:
        raise CharRNNError(f"checkpoint weights do not fit its model configuration ({str(e).splitlines()[0][:100]}); "
                           "the file is damaged, use another checkpoint") from None
    return model.to(device).eval(), Vocab.from_list(state["vocab"])


def first_members(state: dict, k: int) -> dict:
    """A loaded checkpoint of an ensemble with only its first `k` members (k = 1: the first, as one network), for
    restore_model; the run's best validation score, the whole ensemble's, is dropped."""
    weights = {}
    for name, tensor in state["model"].items():  # an Ensemble's weights are members.<i>.<its CharRNN's name>
        index, _, own = name.removeprefix("members.").partition(".")
        if int(index) < k:
            weights[own if k == 1 else name] = tensor
    return {**state, "model_config": {**state["model_config"], "members": k}, "model": weights, "best_val_nats": None}


def resolve(path: Path) -> Path:
    """A .pt file, or a run directory meaning its best.pt (else latest.pt)."""
    path = Path(path)
    if path.is_dir():
        for name in (BEST, LATEST):
            if (path / name).is_file():
                return path / name
        raise CharRNNError(f"{path}: run directory has no {BEST} or {LATEST}; train into it first")
    return path


def latest_run(runs_dir: Path) -> Path:
    """The best checkpoint of the most recently written run under runs_dir."""
    candidates = [p for p in Path(runs_dir).glob(f"*/{LATEST}")] + [p for p in Path(runs_dir).glob(f"*/{BEST}")]
    if not candidates:
        raise CharRNNError(f"no trained model found under {runs_dir}/; run `charrnn train` first or pass --checkpoint")
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    return resolve(newest.parent)


def remove_stray_temporaries(run_dir: Path) -> None:
    """A process killed mid-save leaves a temporary behind; the lock guarantees no writer is live now."""
    files.remove_temporaries(run_dir, "*.pt")


class RunLock:
    """An exclusive lock on a run directory (flock): a second `train` refuses; the kernel drops it when a process dies.

    `created`: the folders this run made for the directory (files.missing_folders, deepest first). If nothing but
    the lock is in it at exit (the run failed before its first checkpoint), they go again, so a mistyped option or
    a bad corpus leaves no empty run directory behind.
    """

    def __init__(self, run_dir: Path, *, created: Sequence[Path] = ()):
        self.path = Path(run_dir) / LOCK
        self.created = list(created)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CharRNNError(f"{self.path.parent}: another charrnn train is writing to this run directory; "
                               "wait for it or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        unused = bool(self.created) and [p.name for p in self.path.parent.iterdir()] == [LOCK]
        if unused:
            self.path.unlink()  # while still held: a run starting now finds the lock taken, or no file at all
        os.close(self._fd)
        self._fd = None
        if unused:
            files.remove_empty_folders(self.created)


def summarize(path: Path, state: dict) -> dict:
    """What `charrnn info` shows, as plain JSON-ready data."""
    import math

    model = state["model_config"]
    history = state.get("history") or {"train": [], "val": []}
    best = state.get("best_val_nats")
    parameters = sum(t.numel() for t in state["model"].values())
    return {
        "checkpoint": str(path),
        "format_version": state["format_version"],
        "model": model,
        "parameters": parameters,
        "vocab_size": len(state["vocab"]),
        "vocab": "".join(state["vocab"]),
        "train_config": state.get("train_config"),
        "steps": state.get("step"),
        "epochs": state.get("epoch"),
        "minutes": (state.get("elapsed_seconds") or 0) / 60,
        "arithmetic": {True: "bf16 autocast", False: "fp32"}.get(state.get("bf16")),  # None: saved before it was kept
        "best_val_bits_per_char": bits(best) if best is not None and math.isfinite(best) else None,
        "corpus": state.get("corpus"),
        "history": {
            "train": [[int(s), float(v)] for s, v in history["train"]],
            "val": [[int(s), float(v), float(t)] for s, v, t in history["val"]],
            "samples": [[int(s), str(text), float(t)] for s, text, t in history.get("samples", [])],
        },
    }
