"""Kill a run with SIGKILL, resume it, and get exactly the run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqtool.training.checkpoint import load_checkpoint

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

STEPS = 120
OVERRIDES = ["--set", f"train.max_steps={STEPS}", "--set", "train.checkpoint.every=20",
             "--set", "train.validate_every=40", "--set", "model.hidden_dim=96", "--set", "model.dropout=0.2"]


def start(recipe: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "seqtool", "train", str(recipe), *OVERRIDES, *extra],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def train_losses(run: Path, key: str = "loss") -> dict[int, float]:
    """step -> `key` of the run's training records."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if r["split"] == "train"}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.005)


def test_sigkill_and_resume_give_the_uninterrupted_run(tmp_path, tiny_recipe):
    straight_dir, broken_dir = tmp_path / "straight", tmp_path / "broken"
    straight_dir.mkdir()
    broken_dir.mkdir()
    straight = start(tiny_recipe, straight_dir)
    assert straight.wait(timeout=300) == 0, straight.communicate()

    kills = 0
    for step in (40, 80):  # kill twice, each time just after a checkpoint appeared
        proc = start(tiny_recipe, broken_dir, *(["--resume"] if kills else []))
        wait_for(broken_dir / "runs" / "tiny" / "checkpoints" / f"step_{step:08d}.pt", proc)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        kills += 1
    final = start(tiny_recipe, broken_dir, "--resume")
    assert final.wait(timeout=300) == 0, final.communicate()

    a, b = straight_dir / "runs" / "tiny", broken_dir / "runs" / "tiny"
    assert train_losses(a) == train_losses(b)
    assert len(train_losses(a)) == STEPS
    wa = load_checkpoint(a / "checkpoints" / "latest.pt")["model"]
    wb = load_checkpoint(b / "checkpoints" / "latest.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not list(b.rglob("*.tmp"))


def test_sigterm_stops_cleanly_with_a_checkpoint(tmp_path, tiny_recipe):
    proc = start(tiny_recipe, tmp_path, "--set", "train.max_steps=100000", "--set", "train.checkpoint.every=100000")
    wait_for(tmp_path / "runs" / "tiny" / "metrics.jsonl", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "continue with --resume" in err and "Traceback" not in err
    latest = load_checkpoint(tmp_path / "runs" / "tiny" / "checkpoints" / "latest.pt")
    assert latest["trainer"]["step"] > 0
