"""Faults during training: kills at random moments, full disks, read-only directories, NaN losses."""

from __future__ import annotations

import errno
import json
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

import seqtool.training.checkpoint as checkpoint_module
from seqtool.cli import main
from seqtool.models.base import LossOut
from seqtool.training.checkpoint import load_checkpoint
from tests.reliability.test_resume import start, train_losses

pytestmark = pytest.mark.reliability


def run_main(args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["seqtool", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing(tmp_path, tiny_recipe):
    """Checkpoint every step so kills often land mid-write; each resume must find whole files."""
    extra = ["--set", "train.checkpoint.every=1", "--set", "train.validate_every=15",
             "--set", "train.checkpoint.keep_last=2"]
    straight_dir, broken_dir = tmp_path / "straight", tmp_path / "broken"
    straight_dir.mkdir()
    broken_dir.mkdir()
    began = time.perf_counter()
    assert start(tiny_recipe, straight_dir, *extra).wait(timeout=300) == 0
    whole = time.perf_counter() - began
    rng = random.Random(7)
    kills = 0
    ckpts = broken_dir / "runs" / "tiny" / "checkpoints"

    def resume_flag() -> list[str]:
        return ["--resume"] if (ckpts / "latest.pt").exists() else []

    while kills < 4:  # kills land anywhere: start-up, prepare, steps, validation, checkpoint writes
        proc = start(tiny_recipe, broken_dir, *extra, *resume_flag())
        time.sleep(rng.uniform(0.3, 0.9) * whole)
        if proc.poll() is not None:
            break  # finished before the kill: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        for name in ("latest.pt", "best.pt"):
            if (ckpts / name).exists():
                load_checkpoint(ckpts / name)  # raises if not a whole checkpoint
    assert kills >= 2
    final = start(tiny_recipe, broken_dir, *extra, *resume_flag())
    assert final.wait(timeout=300) == 0, final.communicate()
    assert train_losses(straight_dir / "runs" / "tiny") == train_losses(broken_dir / "runs" / "tiny")


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_failing_write_keeps_the_last_checkpoint(tmp_path, tiny_recipe, monkeypatch, capsys, code):
    monkeypatch.chdir(tmp_path)
    real_save = torch.save
    calls = {"n": 0}

    def failing_save(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the third checkpoint: write a few bytes, then fail like a full disk
            handle.write(b"partial")
            raise OSError(code, "simulated")
        return real_save(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    status, err = run_main(["train", str(tiny_recipe), "--set", "train.max_steps=40",
                            "--set", "train.checkpoint.every=10"], monkeypatch, capsys)
    assert status == 2
    assert f"cannot write ({__import__('os').strerror(code)})" in err.strip().splitlines()[-1]
    ckpts = tmp_path / "runs" / "tiny" / "checkpoints"
    assert load_checkpoint(ckpts / "latest.pt")["trainer"]["step"] == 20
    assert not list(ckpts.glob("*.tmp")) and not list(ckpts.glob(".*.tmp"))


def _nan_loss(monkeypatch, bad_steps: set[int]):
    """Make the model's loss NaN on the given (1-based) steps."""
    from seqtool.models.base import Seq2SeqModel

    real_loss = Seq2SeqModel.loss
    counter = {"n": 0}

    def loss(self, batch, label_smoothing=0.0, state=None):
        out = real_loss(self, batch, label_smoothing, state)
        if self.training:
            counter["n"] += 1
            if counter["n"] in bad_steps:
                return LossOut(out.loss * float("nan"), out.nll * float("nan"), out.ntokens, out.state)
        return out

    monkeypatch.setattr(Seq2SeqModel, "loss", loss)


def test_nan_steps_are_skipped_and_counted(tmp_path, tiny_recipe, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _nan_loss(monkeypatch, {5, 6, 7})
    status, err = run_main(["train", str(tiny_recipe), "--set", "train.max_steps=20"], monkeypatch, capsys)
    assert status == 0, err
    assert "3 steps skipped" in err
    assert _latest_finite_state(tmp_path)["trainer"]["skipped_steps"] == 3


def test_nan_streak_stops_without_overwriting_a_good_checkpoint(tmp_path, tiny_recipe, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _nan_loss(monkeypatch, set(range(15, 1000)))
    status, err = run_main(["train", str(tiny_recipe), "--set", "train.max_bad_steps=4",
                            "--set", "train.checkpoint.every=10"], monkeypatch, capsys)
    assert status == 2
    assert "training diverged: 4 consecutive steps with a non-finite loss" in err
    assert _latest_finite_state(tmp_path)["trainer"]["step"] == 10


def test_every_new_best_validation_is_saved(tmp_path, tiny_recipe, monkeypatch, capsys):
    """best.pt is the best model validated, not the best that happened to fall on a checkpoint step."""
    monkeypatch.chdir(tmp_path)
    status, err = run_main(["train", str(tiny_recipe), "--set", "train.max_steps=60",
                            "--set", "train.validate_every=15", "--set", "train.checkpoint.every=1000"],
                           monkeypatch, capsys)
    assert status == 0, err
    run = tmp_path / "runs" / "tiny"
    records = map(json.loads, (run / "metrics.jsonl").open())
    valid = [(r["step"], r["bleu"]) for r in records if r.get("split") == "valid"]
    new_bests = [step for i, (step, bleu) in enumerate(valid) if all(bleu > b for _, b in valid[:i])]
    saved = {int(p.stem[5:]) for p in (run / "checkpoints").glob("step_*.pt")}
    assert 15 in new_bests and set(new_bests) <= saved
    assert load_checkpoint(run / "checkpoints" / "best.pt")["trainer"]["step"] == new_bests[-1]


def _latest_finite_state(root: Path) -> dict:
    state = load_checkpoint(root / "runs" / "tiny" / "checkpoints" / "latest.pt")
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    return state


def test_recipe_paths_cannot_escape_through_names(tmp_path, tiny_recipe, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, err = run_main(["train", str(tiny_recipe), "--set", "name=../../evil"], monkeypatch, capsys)
    assert status == 2 and "name: String should match pattern" in err
    assert not Path(tmp_path.parent / "evil").exists()
