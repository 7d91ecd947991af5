"""`seqtool average`: average named checkpoints, or a run's last N, into a new checkpoint file."""

from __future__ import annotations

from pathlib import Path

from seqtool.errors import SeqtoolError
from seqtool.training.averaging import average_checkpoints, last_checkpoints
from seqtool.training.checkpoint import save_checkpoint


def average_run(files: list[Path], run_dir: Path | None, last: int, output: Path | None) -> dict:
    """`seqtool average`: named files, or a run's last N step checkpoints; returns what was written."""
    if bool(files) == (run_dir is not None):
        raise SeqtoolError("average: give either checkpoint files or --checkpoint RUN_DIR (with --last N)")
    paths = list(files) if files else last_checkpoints(run_dir, last)
    if output is None:
        if run_dir is None:
            raise SeqtoolError("average: --output is needed when averaging named files")
        output = Path(run_dir) / "checkpoints" / f"avg_last{last}.pt"
    payload = average_checkpoints(paths)
    save_checkpoint(output, payload)
    return {"output": str(output), "averaged": payload["averaged"], "step": payload["trainer"]["step"]}
