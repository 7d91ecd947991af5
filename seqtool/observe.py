"""What a run reports: log lines (stderr and train.log), scalars (metrics.jsonl and tensorboard)
and a progress bar. Everything goes to stderr; ranks other than 0 stay silent."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import LogSpec
from seqtool.util.files import atomic_write_text


class LogWriteError(SeqtoolError):
    """train.log or metrics.jsonl could not be written (a full disk): training saves before it stops."""


def append_line(path: Path, line: str) -> None:
    """Append one whole line: a write that fails part-way is cut back, so no half line stays."""
    data = memoryview(line.encode("utf-8"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as err:
        raise LogWriteError(f"{path}: cannot write ({err.strerror})") from None
    start = os.fstat(fd).st_size
    try:
        while data:
            data = data[os.write(fd, data):]
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, start)
        if isinstance(err, OSError):
            raise LogWriteError(f"{path}: cannot write ({err.strerror})") from None
        raise
    finally:
        os.close(fd)


class Observer:
    def __init__(self, run_dir: Path | None, spec: LogSpec, *, enabled: bool = True, total: int | None = None,
                 resume_step: int | None = None):
        self.enabled = enabled and run_dir is not None
        self.spec = spec
        self.run_dir = run_dir
        self.writer = None
        self.bar = None
        if not self.enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if spec.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # on resume, events logged after the checkpoint are purged so curves are not doubled
            purge = None if resume_step is None else resume_step + 1
            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge)
        if spec.progress == "rich" and sys.stderr.isatty():
            self.bar = _RichBar(total)

    def info(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        append_line(self.run_dir / "train.log", f"{stamp} {message}\n")
        if self.bar is not None:
            self.bar.print(message)
        elif self.spec.progress != "none":
            print(message, file=sys.stderr, flush=True)

    def scalars(self, step: int, split: str, values: dict[str, float], *, elapsed: float) -> None:
        """One metrics.jsonl record; `elapsed` is the run's training seconds so far (a record field,
        not a tensorboard scalar: tensorboard keeps its own wall time)."""
        if not self.enabled:
            return
        record = {"step": step, "split": split, "elapsed": round(elapsed, 2), **values}
        append_line(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def progress(self, step: int, description: str) -> None:
        if self.enabled and self.bar is not None:
            self.bar.update(step, description)

    def truncate_after(self, step: int) -> None:
        """On resume, forget scalars logged after the checkpoint so the record matches the run."""
        path = self.run_dir / "metrics.jsonl" if self.enabled else None
        if path is None or not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
        atomic_write_text(path, "".join(kept))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.writer is not None:
            self.writer.close()


def _step_of(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


class _RichBar:
    def __init__(self, total: int | None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.description}"), console=Console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task("", total=total)
        self.progress.start()

    def update(self, step: int, description: str) -> None:
        self.progress.update(self.task, completed=step, description=description)

    def print(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)

    def stop(self) -> None:
        self.progress.stop()
