"""What seqtool may fill, replace or delete: only directories it made, and only one process at a time.

A run directory carries a marker file (RUN_MARKER; runs made before it existed are recognised by their
recipe.yaml beside a checkpoints/ folder); a prepared directory carries PREPARED_MARKER from the moment
its staging copy is made (older ones, seqtool's manifest.json). A directory without its marker that
holds anything is someone else's and is refused, never renamed aside or removed. Builders and trainers
take an flock on a lock file, so a second process waits for (prepare) or is refused (train) rather
than working over the first.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from seqtool.errors import SeqtoolError

RUN_MARKER = ".seqtool-run"
PREPARED_MARKER = ".seqtool-prepared"
EXPORT_MARKER = ".seqtool-export"


def is_run_dir(directory: Path) -> bool:
    return (directory / RUN_MARKER).is_file() or (
        (directory / "recipe.yaml").is_file() and (directory / "checkpoints").is_dir())


def is_prepared_dir(directory: Path) -> bool:
    if (directory / PREPARED_MARKER).is_file():
        return True
    try:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"seqtool", "fingerprint"} <= manifest.keys()


def is_export_dir(directory: Path) -> bool:
    return (directory / EXPORT_MARKER).is_file()


def claim_run_dir(run_dir: Path) -> None:
    """Make `run_dir` a run directory (new or empty), or accept one that already is."""
    if run_dir.exists() and not run_dir.is_dir():
        raise SeqtoolError(f"output_dir: {run_dir} is not a directory")
    if run_dir.is_dir() and not is_run_dir(run_dir) and any(run_dir.iterdir()):
        raise SeqtoolError(f"output_dir: {run_dir} is not a seqtool run and not empty; choose a new output_dir")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / RUN_MARKER).touch()
    except OSError as err:
        raise SeqtoolError(f"output_dir: {run_dir}: cannot create the run directory ({err.strerror})") from None


def check_replaceable(directory: Path, key: str) -> None:
    """Refuse unless `directory` is absent, empty, or a prepared directory seqtool made."""
    if not directory.exists() and not directory.is_symlink():
        return
    if not directory.is_dir():
        raise SeqtoolError(f"{key}: {directory} is not a directory")
    if not is_prepared_dir(directory) and any(directory.iterdir()):
        raise SeqtoolError(f"{key}: {directory} is not empty and not made by seqtool (no {PREPARED_MARKER}); "
                           "choose another directory, or empty it yourself")


def check_outside(directory: Path, inputs: list[Path], key: str) -> None:
    """Refuse a directory that is, or holds, one of the inputs it is to be built from."""
    place = directory.resolve()
    for path in inputs:
        real = Path(path).resolve()
        if real == place or place in real.parents:
            raise SeqtoolError(f"{key}: {directory} holds the input {path}; choose a directory outside the corpus")


@contextlib.contextmanager
def locked(lock_file: Path, busy: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive flock on `lock_file`; when another process holds it, call `busy` (which may
    raise to give up) and then wait for it."""
    try:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise SeqtoolError(f"{lock_file}: cannot create the lock file ({err.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            busy()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_lock(run_dir: Path) -> contextlib.AbstractContextManager[None]:
    """The lock of a run directory (on its marker), for as long as a run writes into it."""
    def busy() -> None:
        raise SeqtoolError(f"{run_dir}: in use by another seqtool process (train); wait for it to finish "
                           "or choose another output_dir")

    return locked(run_dir / RUN_MARKER, busy)
