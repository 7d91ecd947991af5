"""SIGINT/SIGTERM on a real process: a signal cuts a long validation short and saves the step reached;
a second one stops at once, even inside a long step, leaving nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqtool.training.checkpoint import load_checkpoint

pytestmark = pytest.mark.reliability

# validation decodes 2000 sentences with beam 8 up to 100 tokens: far longer than the steps around it
LONG_VALIDATION = ["--set", "data.generate.valid=2000", "--set", "eval.valid_decode_limit=null",
                   "--set", "eval.valid_beam=8", "--set", "decode.max_len_b=100", "--set", "train.validate_every=2"]
# one step is 100 batches
LONG_STEP = ["--set", "train.accumulate=100", "--set", "train.max_steps=20"]


def start(recipe: Path, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "seqtool", "train", str(recipe), "--set", "train.max_steps=1000",
                             "--set", "train.checkpoint.every=1000", *overrides],
                            cwd=recipe.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not (path.exists() and text in path.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"{text!r} never appeared in {path}"
        time.sleep(0.005)


def assert_nothing_half_written(run: Path) -> None:
    assert not list(run.rglob("*.tmp"))
    for name in ("metrics.jsonl", "train.log"):
        assert (run / name).read_text().endswith("\n"), name
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_a_signal_cuts_a_long_validation_short(tiny_recipe):
    signum = signal.SIGTERM  # SIGINT takes the same path, in the test below
    proc = start(tiny_recipe, *LONG_VALIDATION)
    run = tiny_recipe.parent / "runs" / "tiny"
    wait_for_line(run / "train.log", "step 2 epoch", proc)  # logged just before step 2's validation
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"seqtool: stopped by signal {signum} at step 2; continue with --resume")
    assert f"valid step 2: interrupted by signal {signum}" in (run / "train.log").read_text()
    assert not [line for line in (run / "metrics.jsonl").read_text().splitlines() if '"valid"' in line]
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["trainer"]["step"] == 2
    assert_nothing_half_written(run)


def test_a_second_signal_stops_a_long_step_at_once(tiny_recipe):
    proc = start(tiny_recipe, *LONG_STEP)
    run = tiny_recipe.parent / "runs" / "tiny"
    wait_for_line(run / "train.log", "step 1 epoch", proc)
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:  # the first signal is taken (and said so) before the second is sent
        if "once more to stop at once" in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "seqtool: stopped at once by a second signal 2, without saving; no checkpoint was written")
    assert not (run / "checkpoints" / "latest.pt").exists()
    assert_nothing_half_written(run)
