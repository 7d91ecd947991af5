"""`seqtool average`: average named checkpoints, or a run's last N, into a new checkpoint file."""

from __future__ import annotations

import os
import re
from pathlib import Path

from seqtool.errors import SeqtoolError
from seqtool.training.averaging import average_checkpoints, last_checkpoints
from seqtool.training.checkpoint import save_checkpoint

_RUN_CHECKPOINT = re.compile(r"(latest|best|step_\d+)\.pt")


def average_run(files: list[Path], run_dir: Path | None, last: int, output: Path | None) -> dict:
    """`seqtool average`: named files, or a run's last N step checkpoints; returns what was written."""
    if bool(files) == (run_dir is not None):
        raise SeqtoolError("average: give either checkpoint files or --checkpoint RUN_DIR (with --last N)")
    paths = list(files) if files else last_checkpoints(run_dir, last)
    if output is None:
        if run_dir is None:
            raise SeqtoolError("average: --output is needed when averaging named files")
        output = Path(run_dir) / "checkpoints" / f"avg_last{last}.pt"
    _check_output(Path(output), paths)
    payload = average_checkpoints(paths)
    save_checkpoint(output, payload)
    return {"output": str(output), "averaged": payload["averaged"], "step": payload["trainer"]["step"]}


def _check_output(output: Path, inputs: list[Path]) -> None:
    """An average holds no optimizer state: written over a run's latest.pt, best.pt or a step
    checkpoint (or over one of its inputs) it would end the run's resumability."""
    if not output.is_file():
        return
    real = output.resolve()
    in_run = real.parent.name == "checkpoints" and _RUN_CHECKPOINT.fullmatch(real.name)
    if in_run or any(os.path.samefile(output, path) for path in inputs if path.is_file()):
        raise SeqtoolError(f"{output}: a checkpoint of the run (or one being averaged); write the average "
                           "to a new file")
