"""A resumed run logs the same train losses as the run that was never stopped, even when the
checkpoint falls between two log lines, and its records' training time carries on from the checkpoint's."""

from __future__ import annotations

import pytest

from seqtool.training.checkpoint import load_checkpoint
from tests.reliability.test_bad_input import invoke
from tests.reliability.test_resume import train_losses

pytestmark = pytest.mark.reliability

EVERY = ["--set", "log.every=7", "--set", "train.checkpoint.every=10", "--set", "train.validate_every=1000"]


def test_resume_between_log_lines_logs_the_uninterrupted_losses(tmp_path, tiny_recipe, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def train(run: str, steps: int, *extra: str) -> None:
        code, _, err = invoke(["train", str(tiny_recipe), "--set", f"output_dir={run}",
                               "--set", f"train.max_steps={steps}", *EVERY, *extra], capsys, monkeypatch)
        assert code == 0, err

    train("straight", 30)
    train("resumed", 10)  # stops at step 10: steps 8-10 are in no log line yet
    saved = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "latest.pt")["trainer"]["elapsed"]
    train("resumed", 30, "--resume")
    straight = train_losses(tmp_path / "straight")
    assert sorted(straight) == [7, 14, 21, 28]
    assert train_losses(tmp_path / "resumed") == straight
    elapsed = train_losses(tmp_path / "resumed", "elapsed")
    assert 0 < elapsed[7] <= saved < elapsed[14] < elapsed[21] < elapsed[28]
