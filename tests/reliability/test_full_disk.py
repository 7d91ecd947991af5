"""A real full or read-only filesystem (a small tmpfs) under every write seqtool makes: one line naming
the file, exit code 2, no half-written line or file, and the last checkpoint kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqtool.training.checkpoint import load_checkpoint
from seqtool.util.ownership import RUN_MARKER
from tests.reliability.conftest import assert_one_line_error, fill, read_only
from tests.reliability.test_bad_input import invoke

pytestmark = pytest.mark.reliability

FULL = "No space left on device"


def train(recipe: Path, run: Path, capsys, monkeypatch, *overrides: str) -> tuple[int, str]:
    """Train into `run`, with the prepared data outside it (so only the run's own writes hit its disk)."""
    monkeypatch.chdir(recipe.parent)
    code, _, err = invoke(["train", str(recipe), "--set", f"output_dir={run}",
                           "--set", f"data.prepared_dir={recipe.parent / 'prepared'}", *overrides],
                          capsys, monkeypatch)
    return code, err


def test_full_disk_inside_torch_save_keeps_the_last_checkpoint(tmp_path, tiny_recipe, tmpfs, capsys, monkeypatch):
    run = tmpfs(tmp_path / "run", "700k")  # room for one checkpoint (~470 kB), not two
    code, err = train(tiny_recipe, run, capsys, monkeypatch, "--set", "train.max_steps=6",
                      "--set", "train.checkpoint.every=2")
    assert_one_line_error(code, err, "step_00000004.pt", f"cannot write ({FULL})")
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["trainer"]["step"] == 2
    assert not list(run.rglob("*.tmp"))


def test_full_disk_while_logging_saves_a_checkpoint_and_leaves_whole_lines(tmp_path, tiny_recipe, tmpfs, capsys,
                                                                           monkeypatch):
    disk = tmpfs(tmp_path / "disk", "64k")
    run = disk / "run"
    run.mkdir()
    (run / RUN_MARKER).touch()  # a run directory seqtool made, holding the mount point below
    checkpoints = tmpfs(run / "checkpoints", "2m")  # another disk, so the checkpoint after the failure fits
    fill(disk, leave=3 * 4096)  # recipe.yaml, train.log and one page of metrics.jsonl: a later line crosses a page
    code, err = train(tiny_recipe, run, capsys, monkeypatch, "--set", "train.max_steps=400",
                      "--set", "train.validate_every=1000", "--set", "train.checkpoint.every=1000")
    last = assert_one_line_error(code, err, FULL, "continue with --resume")
    assert "metrics.jsonl" in last or "train.log" in last
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines(keepends=True)
               if line.endswith("\n") or pytest.fail(f"half-written line {line!r}")]
    assert (run / "train.log").read_text().endswith("\n")
    saved = load_checkpoint(checkpoints / "latest.pt")["trainer"]["step"]
    assert saved >= records[-1]["step"] and f"saved step {saved}" in last


def test_full_disk_during_prepare(tmp_path, tiny_recipe, tmpfs, capsys, monkeypatch):
    out = tmpfs(tmp_path / "prep", "64k")
    fill(out, leave=4 * 4096)
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(["prepare", str(tiny_recipe), "--set", f"data.prepared_dir={out / 'data'}"],
                          capsys, monkeypatch)
    assert_one_line_error(code, err, str(out / "data"), FULL)
    assert not (out / "data").exists() and not (out / "data.partial").exists()


def test_train_into_a_read_only_directory(tmp_path, tiny_recipe, tmpfs, capsys, monkeypatch):
    run = tmpfs(tmp_path / "ro", "1m")
    read_only(run)
    code, err = train(tiny_recipe, run / "run", capsys, monkeypatch)
    assert_one_line_error(code, err, str(run / "run"), "Read-only file system")


def test_prepared_data_in_a_read_only_directory(tmp_path, tiny_recipe, tmpfs, capsys, monkeypatch):
    ro = tmpfs(tmp_path / "ro", "1m")
    read_only(ro)
    monkeypatch.chdir(tmp_path)
    code, _, err = invoke(["prepare", str(tiny_recipe), "--set", f"data.prepared_dir={ro / 'data'}"],
                          capsys, monkeypatch)
    assert_one_line_error(code, err, str(ro), "Read-only file system")


def test_output_dir_naming_a_file(tmp_path, tiny_recipe, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    code, err = train(tiny_recipe, afile, capsys, monkeypatch)
    assert_one_line_error(code, err, "output_dir", str(afile), "not a directory")
    assert afile.read_text() == "mine\n"
