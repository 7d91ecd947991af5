"""Two processes on one prepared directory or one run directory: the prepared data is built once and
whole, a second train in a run directory in use fails with one line, and "up to date" means every
file the manifest names is there."""

from __future__ import annotations

import importlib
import multiprocessing
import sys
import time
from pathlib import Path

import pytest

from seqtool.data.datasets import PreparedData
from tests.reliability.test_bad_input import check_error, invoke

pytestmark = pytest.mark.reliability

FORK = multiprocessing.get_context("fork")


def _seqtool(args: list[str], log: Path, started, hold: str | None) -> None:
    """A child process running the CLI; with `hold`, it stops for a while inside that step, after
    announcing it, so that the parent can start a second process at exactly that moment."""
    sys.stderr = open(log, "w", buffering=1)  # noqa: SIM115 (the child's stderr until it exits)
    if hold:
        module_name, path = hold.split(":")
        owner = importlib.import_module(module_name)
        *parents, attr = path.split(".")
        for name in parents:
            owner = getattr(owner, name)
        real = getattr(owner, attr)

        def held(*a, **k):
            if not started.is_set():
                started.set()
                time.sleep(2.0)
            return real(*a, **k)

        setattr(owner, attr, held)
    from seqtool.cli import main

    sys.argv = ["seqtool", *args]
    main()


def two_at_once(first: list[str], second: list[str], hold: str, tmp: Path) -> tuple[tuple[int, str], ...]:
    """Start `first`, wait until it is inside `hold`, start `second`; both exit codes and stderr texts."""
    started = FORK.Event()
    logs = [tmp / "first.err", tmp / "second.err"]
    a = FORK.Process(target=_seqtool, args=(first, logs[0], started, hold))
    a.start()
    assert started.wait(120), "the first process never reached the held step"
    b = FORK.Process(target=_seqtool, args=(second, logs[1], None, None))
    b.start()
    for proc in (a, b):
        proc.join(300)
    return tuple((proc.exitcode, log.read_text()) for proc, log in zip((a, b), logs))


def assert_whole(directory: Path) -> None:
    data = PreparedData(directory)
    for name in data.manifest["files"]:
        assert (directory / name).is_file(), name
    assert not list(directory.parent.glob(f"{directory.name}.partial"))


def test_two_prepares_of_one_directory_build_it_once(corpus, tmp_path):
    (a_code, a_err), (b_code, b_err) = two_at_once(["prepare", "r.yaml"], ["prepare", "r.yaml"],
                                                   "seqtool.data.prepare:_encode_split", tmp_path)
    assert a_code == 0 and b_code == 0, (a_err, b_err)
    assert "is up to date" in b_err
    assert_whole(tmp_path / "runs" / "tiny" / "data")


def test_two_trains_sharing_prepared_data_build_it_once(corpus, tmp_path):
    """The same race through `train`, as a sweep sharing data.prepared_dir starts it."""
    common = ["--set", "data.prepared_dir=shared", "--set", "train.max_steps=2"]
    (a_code, a_err), (b_code, b_err) = two_at_once(
        ["train", "r.yaml", "--set", "output_dir=runs/a", *common],
        ["train", "r.yaml", "--set", "output_dir=runs/b", *common], "seqtool.data.prepare:_encode_split", tmp_path)
    assert a_code == 0 and b_code == 0, (a_err, b_err)
    assert "is up to date" in b_err
    assert_whole(tmp_path / "shared")


def test_a_second_train_in_a_run_directory_in_use_fails(corpus, tmp_path):
    args = ["train", "r.yaml", "--set", "train.max_steps=3"]
    (a_code, a_err), (b_code, b_err) = two_at_once(args, args, "seqtool.training.trainer:Trainer.train", tmp_path)
    assert a_code == 0, a_err
    check_error(b_code, b_err, "runs/tiny", "in use by another seqtool")
    log = (tmp_path / "runs" / "tiny" / "train.log").read_text()
    assert log.count("finished at step") == 1


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_up_to_date_means_every_file_is_there(corpus, capsys, monkeypatch, damage):
    code, _, err = invoke(["prepare", "r.yaml"], capsys, monkeypatch)
    assert code == 0, err
    victim = Path("runs/tiny/data/train.src.bin")
    whole = victim.read_bytes()
    if damage == "delete":
        victim.unlink()
    else:
        victim.write_bytes(whole[:-2])
    code, _, err = invoke(["prepare", "r.yaml"], capsys, monkeypatch)
    assert code == 0, err
    assert "up to date" not in err
    assert victim.read_bytes() == whole
