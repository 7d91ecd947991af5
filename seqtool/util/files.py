"""Writing a file a path names, never leaving it half-written and never replacing what it is.

A new path or a regular file is replaced atomically: a temporary sibling, fsync, rename. The new file
gets the mode the umask allows (0666 & ~umask), an overwritten one keeps its own. A symlink keeps its
link: the file it names is the one replaced. A device, a FIFO or a socket, and the links into /proc
that name a process's open files (/dev/stdout, /dev/fd/N), are written through: replacing them would
turn /dev/null into a file, or leave a pipe's reader waiting for a writer that never comes.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from seqtool.errors import SeqtoolError


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """A handle whose writes reach `path` whole on success; on failure a replaced file is untouched."""
    path = Path(path)
    encoding = None if "b" in mode else encoding
    try:
        target, file_mode = _replace_target(path)
    except OSError as err:
        raise _write_error(path, err) from None
    if target is None:
        with _written_through(path, mode, encoding) as handle:
            yield handle
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.fchmod(fd, file_mode)
    except OSError as err:
        raise _write_error(path, err) from None
    try:
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise _write_error(path, err) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def _replace_target(path: Path) -> tuple[Path | None, int]:
    """The regular file to replace for `path` and the mode to give it, or None to write through."""
    try:
        info = os.stat(path)  # follows links: what the path names
    except FileNotFoundError:
        info = None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise SeqtoolError(f"{path}: is a directory, not a file")
    if (info is not None and not stat.S_ISREG(info.st_mode)) or _names_an_open_file(path):
        return None, 0
    file_mode = stat.S_IMODE(info.st_mode) if info is not None else 0o666 & ~_umask()
    return Path(os.path.realpath(path)), file_mode


def _names_an_open_file(path: Path) -> bool:
    """Whether `path` or a link it leads through lies in /proc, as /dev/stdout -> /proc/self/fd/1 does."""
    hop = Path(os.path.abspath(path))
    for _ in range(40):  # the kernel's own limit on links followed
        if f"{os.path.realpath(hop.parent)}/".startswith("/proc/"):
            return True
        if not hop.is_symlink():
            return False
        hop = hop.parent / os.readlink(hop)
    return False


@contextlib.contextmanager
def _written_through(path: Path, mode: str, encoding: str | None) -> Iterator[IO]:
    """Opened to append, not truncate: /dev/stdout of `>> log` names a file the shell opened to append."""
    try:
        with open(path, mode.replace("w", "a"), encoding=encoding) as handle:
            yield handle
    except OSError as err:
        raise _write_error(path, err) from None


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _write_error(path: Path, err: OSError) -> SeqtoolError:
    return SeqtoolError(f"{path}: cannot write ({os.strerror(err.errno) if err.errno else err})")
