"""Files and folders the user names: one atomic writer, and checks that turn a bad path into one clear line."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharRNNError

TMP_SUFFIX = ".tmp"  # temporaries are NAME.<random>.tmp beside the file they become
STDIN = Path("-")  # a text to read given as "-" is standard input, as Unix tools take it (a file named - by its full path)


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through `write(f)` to a temporary beside `path`, fsync it, then rename it over `path`, so that a
    crash or a full disk leaves the old file (or none) and never a half-written one. The temporary's name is
    unique, so concurrent writers (torchrun ranks building one corpus) never share one.

    What is not a regular file (/dev/null, /dev/stdout, a FIFO) is written through: a rename would replace the
    device itself (as root, `-o /dev/null` left a regular file there). A symbolic link keeps pointing where it did:
    its target is written."""
    path = Path(path)
    if path.exists() and not path.is_file():
        with open(path, "wb") as f:
            write(f)
        return
    if path.is_symlink():
        path = path.resolve()
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=TMP_SUFFIX)
    except OSError as e:  # name the file the user asked for, not the temporary
        raise OSError(e.errno, e.strerror, str(path)) from None
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; the file gets the mode a plain open() would give
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _mode_for(path: Path) -> int:
    """An existing file's mode (overwriting keeps it), else 0666 less the process's umask."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(utf8(text)))


def utf8(text: str) -> bytes:
    """Text as UTF-8. A file name that is not UTF-8 reaches Python as lone surrogates ("\udcff"); in a page's title
    or a chart it becomes "?" instead of failing the write."""
    return text.encode("utf-8", errors="replace")


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_temporaries(directory: Path, name_glob: str) -> None:
    """Temporaries a killed writer left behind for files matching `name_glob` (call only when no writer is live)."""
    for tmp in Path(directory).glob(f"{name_glob}.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


def output_dir(path: Path, option: str, *, named: Path | None = None) -> Path:
    """A folder to write into, created with its parents; a file in the way or a place where nothing can be
    written (tried by creating and removing a file there) is an error naming `named` (default: the folder)."""
    path = Path(path)
    named = path if named is None else named
    if path.exists() and not path.is_dir():
        raise CharRNNError(f"{option} {named}: {path} is a file, not a folder; choose another place")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise CharRNNError(f"{option} {named}: cannot write there ({e.strerror}); choose a writable place") from None
    return path


def missing_folders(path: Path) -> list[Path]:
    """The folders that output_dir(path) would create, deepest first."""
    missing, path = [], Path(path)
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove each folder, deepest first, stopping at the first that is not empty (or cannot go)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


# Every page charrnn writes carries this tag, so that writing a page again may replace charrnn's own page but
# never a user's file that happens to have the default name (page.html, <run>.html).
PAGE_MARK = '<meta name="generator" content="charrnn">'


def output_file(path: Path, option: str) -> Path:
    """A file to (over)write: not a folder; its parent folders are created; an unwritable place is an error."""
    path = Path(path)
    if path.is_dir():
        raise CharRNNError(f"{option} {path}: is a folder; name a file to write")
    output_dir(path.parent, option, named=path)
    return path


def output_page(path: Path, option: str, *, force: bool = False) -> Path:
    """An HTML page to write: as output_file, and an existing file there must be a page charrnn wrote (or
    `force`), so that a default name never replaces a user's own file."""
    path = output_file(path, option)
    if force or not path.is_file():
        return path
    try:
        with open(path, "rb") as f:
            ours = PAGE_MARK.encode() in f.read(4096)
    except OSError:  # unreadable: writing over it will report the problem
        return path
    if not ours:
        raise CharRNNError(f"{option} {path}: a file charrnn did not write is there; "
                           f"name another file with {option}, or pass --force to replace it")
    return path


def shown_name(path: Path) -> str:
    """A text's path as messages name it ("standard input" for "-")."""
    return "standard input" if Path(path) == STDIN else str(path)


def input_file(path: Path, option: str | None = None) -> Path:
    """A file to read: it exists, is not a folder, and can be opened; or "-", standard input. Errors name the
    option the path came from, if any."""
    path = Path(path)
    if path == STDIN:
        return path
    named = f"{option} {path}" if option else str(path)
    if not path.exists():
        raise CharRNNError(f"{named}: no such file; check the path")
    if path.is_dir():
        raise CharRNNError(f"{named}: is a folder; pass a text file")
    if not os.access(path, os.R_OK):
        raise CharRNNError(f"{named}: not readable (permission denied); check its permissions")
    return path
