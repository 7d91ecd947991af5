"""DDP through torchrun on CPU (gloo): two processes equal one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow

# 30 steps x 2 batches stay inside the first epoch: at an epoch's end DDP drops the < world batches
# that cannot go to every rank, which one process does not.
COMMON = ["--set", "model.dropout=0.0", "--set", "train.max_steps=30", "--set", "train.validate_every=15",
          "--set", "train.checkpoint.every=15", "--set", "log.every=1", "--set", "train.batch_tokens=60"]


def torchrun(recipe: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "seqtool", "train", str(recipe), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["split"] == "train"]


def test_two_ranks_match_one_rank_with_the_same_global_batch(tmp_path, tiny_recipe):
    ddp = torchrun(tiny_recipe, tmp_path, *COMMON, "--set", "output_dir=runs/ddp")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = run_cli("train", str(tiny_recipe), *COMMON, "--set", "train.accumulate=2", "--set", "output_dir=runs/one",
                     cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    a, b = losses(tmp_path / "runs" / "ddp"), losses(tmp_path / "runs" / "one")
    assert len(a) == len(b) == 30
    assert a == pytest.approx(b, rel=1e-4)
    assert "x2 ranks" in (tmp_path / "runs" / "ddp" / "train.log").read_text()
    # only rank 0 wrote: one log line per step, not two
    assert len([r for r in (tmp_path / "runs" / "ddp" / "metrics.jsonl").read_text().splitlines()]) == 30 + 2


def test_resume_at_another_world_size(tmp_path, tiny_recipe):
    first = torchrun(tiny_recipe, tmp_path, *COMMON, "--set", "train.max_steps=15")
    assert first.returncode == 0, first.stderr[-3000:]
    more = run_cli("train", str(tiny_recipe), *COMMON, "--set", "train.accumulate=2", "--resume", cwd=tmp_path)
    assert more.returncode == 0, more.stderr
    assert "resumed from" in more.stderr
    assert len(losses(tmp_path / "runs" / "tiny")) == 30
