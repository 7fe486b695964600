"""Built-in corpora assembled from files every installation has: C/C++ from torch's headers, Python's stdlib.

Deterministic (sorted paths, identical files once), each file introduced by a marker line, cached per source
version. Standard library only: no model code here, and no torch import (the headers are found on disk).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from charrnn import files
from charrnn.errors import CharRNNError

RECIPE_VERSION = 1
HEAD_BYTES = 4096  # where code generators leave their "@generated" mark


def _torch_include() -> Path:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise CharRNNError("the cpp corpus needs the torch package's headers, but torch is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "include"


def _torch_version() -> str:
    from importlib.metadata import version

    return "torch-" + version("torch")


def _stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


CPP_ROOTS = ("c10", "ATen", "torch", "caffe2")  # PyTorch's own code; everything else under include/ is vendored
CPP_SUFFIXES = {".h", ".hpp", ".cuh", ".cpp", ".cc", ".c", ".inl"}
CPP_EXCLUDED_DIRS = {"ops", "generated"}  # ATen/ops: ~7,000 generated per-operator headers


def is_generated(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"@generated" in f.read(HEAD_BYTES)


def _cpp_files(root: Path) -> Iterator[Path]:
    for top in CPP_ROOTS:
        for dirpath, dirnames, filenames in os.walk(root / top):
            dirnames[:] = [d for d in dirnames if d not in CPP_EXCLUDED_DIRS]
            for name in filenames:
                path = Path(dirpath) / name
                if path.suffix in CPP_SUFFIXES and not is_generated(path):
                    yield path


PY_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def _python_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in PY_EXCLUDED_DIRS and not d.startswith("test")]
        for name in filenames:
            if name.endswith(".py") and not name.startswith("test_"):
                yield Path(dirpath) / name


def _python_version() -> str:
    return "python-" + ".".join(map(str, sys.version_info[:3]))


@dataclass(frozen=True)
class Recipe:
    """How to assemble one built-in corpus from files on disk."""

    name: str
    description: str
    marker: str  # the comment syntax of the marker line, e.g. "// file: c10/util/Half.h"
    find_root: Callable[[], Path]  # the folder the files come from
    source_key: Callable[[], str]  # names the source's version, so a new torch or Python gets a new cache file
    walk: Callable[[Path], Iterator[Path]]  # the files under the root that the corpus includes

    def root(self) -> Path:
        return self.find_root()

    def files(self) -> list[Path]:
        """Relative paths (sorted) of the files the corpus includes."""
        root = self.root()
        return sorted(p.relative_to(root) for p in self.walk(root))


RECIPES = {
    "cpp": Recipe("cpp", "C/C++ source: PyTorch's own headers (c10, ATen, torch/csrc) from the installed torch, "
                  "without generated or vendored files", "//", _torch_include, _torch_version, _cpp_files),
    "python": Recipe("python", "Python source: the standard library's modules, without test suites", "#",
                     _stdlib, _python_version, _python_files),
}
DEFAULT = "cpp"


def names() -> list[str]:
    return list(RECIPES)


def cache_dir() -> Path:
    base = os.environ.get("CHARRNN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "charrnn")
    return Path(base) / "corpora"


def cache_path(recipe: Recipe) -> Path:
    return cache_dir() / f"{recipe.name}-{recipe.source_key()}-v{RECIPE_VERSION}.txt"


def assemble(recipe: Recipe) -> str:
    """The corpus text: each distinct UTF-8 file once, in path order, after a marker line naming it."""
    root = recipe.root()
    seen: set[bytes] = set()
    parts = []
    for rel in recipe.files():
        raw = (root / rel).read_bytes()
        digest = hashlib.sha256(raw).digest()
        if digest in seen:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a handful of files in other encodings: left out, deterministically
        seen.add(digest)
        text = text.replace("\r\n", "\n")
        parts.append(f"{recipe.marker} file: {rel.as_posix()}\n{text}{'' if text.endswith(chr(10)) else chr(10)}\n")
    return "".join(parts)


def build(name: str) -> Path:
    """The path of the built corpus, assembling and caching it on first use (atomically)."""
    recipe = RECIPES[name]
    path = cache_path(recipe)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write_text(path, assemble(recipe))
    return path


def rebuilt(recorded: Path) -> Path | None:
    """A built-in corpus that a checkpoint recorded at `recorded`, assembled again where that file is gone (a
    cleared cache, another machine). The cache file's name says which corpus, from which torch or Python, so the
    same name here means the same text (eval still checks the fingerprint). None if it names no built-in here."""
    for recipe in RECIPES.values():
        if cache_path(recipe).name == Path(recorded).name:
            return build(recipe.name)
    return None


def resolve(name_or_path: str | None) -> tuple[Path, str]:
    """(file, name): an existing path means that file; a built-in name means its cached build."""
    if name_or_path is None:
        name_or_path = DEFAULT
    path = Path(name_or_path)
    if path == files.STDIN:  # a run records its corpus's path (eval's default text, --resume) and reads it twice
        raise CharRNNError("training reads a file, not standard input; save the text to a file and pass its path")
    if path.exists():
        if not path.is_dir() and not path.is_file():  # a pipe (`<(...)`) or a device: it can be read once only
            raise CharRNNError(f"{path}: not a regular file (a pipe or a device); training reads its corpus more than once, "
                               "so save the text to a file and pass its path")
        return path, path.stem
    if name_or_path in RECIPES:
        return build(name_or_path), name_or_path
    raise CharRNNError(f"{name_or_path}: no such file, and not a built-in corpus (built-in: {', '.join(names())}); "
                       "pass a path to a text file or one of those names")


@dataclass(frozen=True)
class CorpusInfo:
    name: str
    description: str
    cached: bool
    chars: int | None
    distinct: int | None
    files: int | None
    fingerprint: str | None


def describe(name: str, *, build_if_missing: bool = False) -> CorpusInfo:
    recipe = RECIPES[name]
    path = cache_path(recipe)
    cached = path.exists()
    if not cached and not build_if_missing:
        return CorpusInfo(name, recipe.description, False, None, None, None, None)
    path = build(name)
    text = path.read_text(encoding="utf-8")
    files = text.count(f"\n{recipe.marker} file: ") + text.startswith(f"{recipe.marker} file: ")
    return CorpusInfo(name, recipe.description, cached, len(text), len(set(text)), files,
                      hashlib.sha256(text.encode("utf-8")).hexdigest())
