"""Damaged checkpoints given to translate, eval and train --resume: cut anywhere, or whole but with a
recipe that is not a mapping, no trainer state, or NaN weights. Each ends in one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqtool.util.ownership import RUN_MARKER
from tests.reliability.conftest import assert_one_line_error
from tests.reliability.test_bad_input import invoke

pytestmark = pytest.mark.reliability

COMMANDS = ("translate", "eval", "resume")


def use(command: str, checkpoint: Path, trained: Path, tmp_path: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    """Run `command` on a checkpoint; resume finds it as the latest.pt of a run directory of its own."""
    monkeypatch.chdir(trained)
    if command != "resume":
        return invoke([command, "-c", str(checkpoint)], capsys, monkeypatch, stdin=b"1 2\n")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / RUN_MARKER).touch()  # a run directory seqtool made
    checkpoint.replace(run / "checkpoints" / "latest.pt")
    return invoke(["train", "tiny.yaml", "--resume", "--set", f"output_dir={run}"], capsys, monkeypatch)


def loose(tmp_path: Path, name: str) -> Path:
    """Where a damaged checkpoint is put: two levels down, so a run directory eval might guess from it
    stays inside tmp_path."""
    directory = tmp_path / "copy" / "checkpoints"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def named(command: str, checkpoint: Path, tmp_path: Path) -> str:
    return str(tmp_path / "run" / "checkpoints" / "latest.pt") if command == "resume" else str(checkpoint)


def good_payload(trained: Path) -> dict:
    return torch.load(trained / "runs" / "tiny" / "checkpoints" / "latest.pt", weights_only=True)


CUTS = [10, 1000, 4096, 20_000, 50_000, *(f"{p}%" for p in range(10, 100, 10)), "-1"]


@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoints_cut_anywhere(command, trained, tmp_path, capsys, monkeypatch):
    data = (trained / "runs" / "tiny" / "checkpoints" / "latest.pt").read_bytes()
    for cut in CUTS:
        size = len(data) * int(cut[:-1]) // 100 if str(cut).endswith("%") else int(cut) % len(data)
        path = loose(tmp_path, f"cut{size}.pt")
        path.write_bytes(data[:size])
        code, out, err = use(command, path, trained, tmp_path, capsys, monkeypatch)
        assert_one_line_error(code, err, named(command, path, tmp_path), "not a readable seqtool checkpoint")
        assert out == ""


def _recipe_a_list(payload: dict) -> None:
    payload["recipe"] = ["not", "a", "mapping"]


def _nan_weights(payload: dict) -> None:
    name = next(k for k, v in payload["model"].items() if v.is_floating_point())
    payload["model"][name][0] = float("nan")


def _weights_a_list(payload: dict) -> None:
    payload["model"] = [1, 2]


DAMAGE = {
    "recipe not a mapping": (_recipe_a_list, COMMANDS, "its recipe is not a mapping"),
    "NaN weights": (_nan_weights, COMMANDS, "NaN values"),
    "weights not a mapping": (_weights_a_list, COMMANDS, "its weights are not a mapping of tensors"),
    "no trainer state": (lambda p: p.pop("trainer"), ("resume",), "lacks the trainer state"),
    "no optimizer state": (lambda p: p.pop("optimizer"), ("resume",), "lacks the optimizer state"),
    "trainer state a string": (lambda p: p.update(trainer="x"), ("resume", "eval"), "trainer state"),
    "trainer state of another kind": (lambda p: p["trainer"].update(unknown=1), ("resume",), "cannot resume"),
}


@pytest.mark.parametrize("case,command", [(case, command) for case in sorted(DAMAGE) for command in DAMAGE[case][1]])
def test_whole_checkpoints_with_damaged_content(case, command, trained, tmp_path, capsys, monkeypatch):
    damage, _, needle = DAMAGE[case]
    payload = good_payload(trained)
    damage(payload)
    path = loose(tmp_path, "damaged.pt")
    torch.save(payload, path)
    code, out, err = use(command, path, trained, tmp_path, capsys, monkeypatch)
    assert_one_line_error(code, err, named(command, path, tmp_path), needle)
    assert out == ""


def test_a_checkpoint_without_trainer_state_still_translates(trained, tmp_path, capsys, monkeypatch):
    payload = good_payload(trained)
    del payload["trainer"], payload["optimizer"]
    torch.save(payload, loose(tmp_path, "weights.pt"))
    code, out, err = use("translate", loose(tmp_path, "weights.pt"), trained, tmp_path, capsys, monkeypatch)
    assert code == 0, err
    assert len(out.splitlines()) == 1
