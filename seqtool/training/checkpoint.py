"""Checkpoints: plain data (tensors and containers) saved atomically and loaded without unpickling code.

    {"format", "seqtool", "recipe", "tokenizer_sha256", "model", "optimizer", "schedule", "scaler",
     "trainer": {"step", "epoch", "position", "best", ...}, "rng": {...}, "carry"}

Files live in <run>/checkpoints: step_XXXXXXXX.pt, and latest.pt / best.pt as hard links (copies
where links are not supported) that are switched with an atomic rename only after the file they
point to is complete, so every name always refers to a whole checkpoint.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import zipfile
from pathlib import Path

import torch

from seqtool import __version__
from seqtool.errors import SeqtoolError, first_line
from seqtool.util.files import atomic_open

FORMAT = 1
REQUIRED = ("format", "seqtool", "recipe", "model")
RESUME_STATE = ("trainer", "optimizer", "schedule", "rng")


class _Writes:
    """A file as torch.save sees it, keeping the exception of a failed write (a full disk, a forced
    stop): torch reports it as a RuntimeError ("enforce fail ... unexpected pos") that hides the cause."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except BaseException as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.handle.flush()


def save_checkpoint(path: Path, payload: dict) -> None:
    with atomic_open(path, "wb") as handle:
        writes = _Writes(handle)
        try:
            torch.save({"format": FORMAT, "seqtool": __version__, **payload}, writes)
        except RuntimeError:
            if writes.error is None:
                raise
            raise writes.error from None


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint with weights_only=True; anything else fails with one clear line."""
    path = Path(path)
    if not path.is_file():
        raise SeqtoolError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError,
            AttributeError, TypeError, ImportError, IndexError, OSError) as err:  # OSError: some cuts
        raise SeqtoolError(f"{path}: not a readable seqtool checkpoint ({first_line(err)})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED):
        raise SeqtoolError(f"{path}: not a seqtool checkpoint (missing {', '.join(REQUIRED)})")
    if payload["format"] != FORMAT:
        raise SeqtoolError(f"{path}: checkpoint format {payload['format']} is not supported "
                           f"(this seqtool {__version__} reads format {FORMAT})")
    _check_content(path, payload)
    return payload


def _check_content(path: Path, payload: dict) -> None:
    """The parts every command reads are of the right kind, and the weights are numbers."""
    if not isinstance(payload["recipe"], dict):
        raise SeqtoolError(f"{path}: its recipe is not a mapping (a damaged or foreign checkpoint)")
    weights = payload["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise SeqtoolError(f"{path}: its weights are not a mapping of tensors (a damaged or foreign checkpoint)")
    # NaN only: a buffer may rightly hold an infinity (MemN2N's best loss so far starts at inf), and the
    # trainer never saves parameters that are not finite
    if any(torch.isnan(v).any() for v in weights.values() if v.is_floating_point()):
        raise SeqtoolError(f"{path}: its weights hold NaN values; refusing to use them")
    if not isinstance(payload.get("trainer", {}), dict):
        raise SeqtoolError(f"{path}: its trainer state is not a mapping (a damaged checkpoint)")


def check_resumable(path: Path, payload: dict) -> None:
    """A checkpoint --resume can continue: averaged or weights-only ones lack the training state."""
    for part in RESUME_STATE:
        if not isinstance(payload.get(part), dict):
            raise SeqtoolError(f"{path}: the checkpoint lacks the {part} state that --resume needs "
                               "(it can be evaluated and translated, not resumed)")
    if not isinstance(payload["trainer"].get("step"), int):
        raise SeqtoolError(f"{path}: the checkpoint's trainer state has no step (a damaged checkpoint)")


def link_atomic(target: Path, name: Path) -> None:
    """Make `name` refer to `target`'s bytes, replacing it in one rename."""
    tmp = name.with_name(f".{name.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:
        shutil.copyfile(target, tmp)
    os.replace(tmp, name)


class CheckpointDir:
    """Step checkpoints with keep-last-k pruning; `best` entries survive pruning."""

    def __init__(self, directory: Path, keep_last: int, keep_best: int):
        self.directory, self.keep_last, self.keep_best = Path(directory), keep_last, keep_best
        self.latest_step: int | None = None
        for stale in self.directory.glob(".*.tmp"):  # a write interrupted by a kill
            stale.unlink(missing_ok=True)

    def step_path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    def save(self, step: int, payload: dict, best_steps: list[int], is_best: bool) -> Path:
        """Write step_N.pt, then point latest (and best) at it; a failed write leaves the old ones."""
        path = self.step_path(step)
        save_checkpoint(path, payload)
        try:
            link_atomic(path, self.directory / "latest.pt")
            if is_best and self.keep_best:
                link_atomic(path, self.directory / "best.pt")
            self._prune(set(best_steps[: self.keep_best]))
        except OSError as err:
            raise SeqtoolError(f"{self.directory}: cannot update checkpoint links ({os.strerror(err.errno)}); "
                               f"{path.name} is complete") from None
        return path

    def _prune(self, protected: set[int]) -> None:
        steps = sorted(int(p.stem[5:]) for p in self.directory.glob("step_*.pt"))
        for step in steps[: -self.keep_last]:
            if step not in protected:
                self.step_path(step).unlink(missing_ok=True)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": _plain(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
