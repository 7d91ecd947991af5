"""Checkpoints: plain data, atomic writes, and loading that never runs code."""

import os
import pickle
from pathlib import Path

import pytest
import torch

from seqtool.errors import SeqtoolError
from seqtool.training.checkpoint import CheckpointDir, load_checkpoint, save_checkpoint

PAYLOAD = {"recipe": {"name": "x"}, "model": {"w": torch.ones(3)}, "trainer": {"step": 5}}


def test_round_trip_is_plain_data(tmp_path):
    save_checkpoint(tmp_path / "a.pt", PAYLOAD)
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded["format"] == 1 and torch.equal(loaded["model"]["w"], torch.ones(3))
    assert list(tmp_path.iterdir()) == [tmp_path / "a.pt"]  # no temporary file left behind


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['EXPLOIT_MARK'])}",))


def test_a_crafted_pickle_never_runs(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    evil = tmp_path / "evil.pt"
    torch.save({"format": 1, "seqtool": "0", "recipe": {}, "model": Exploit()}, evil)
    with pytest.raises(SeqtoolError, match="not a readable seqtool checkpoint"):
        load_checkpoint(evil)
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(SeqtoolError, match="not a readable seqtool checkpoint"):
        load_checkpoint(plain)
    assert not mark.exists()


@pytest.mark.parametrize("content,message", [
    (b"", "not a readable seqtool checkpoint"),
    (b"hello world", "not a readable seqtool checkpoint"),
])
def test_garbage_files_fail_cleanly(tmp_path, content, message):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(SeqtoolError, match=message):
        load_checkpoint(tmp_path / "x.pt")


def test_truncated_and_foreign_checkpoints(tmp_path):
    save_checkpoint(tmp_path / "a.pt", PAYLOAD)
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SeqtoolError, match="not a readable seqtool checkpoint"):
        load_checkpoint(tmp_path / "t.pt")
    torch.save({"state_dict": {"w": torch.ones(1)}}, tmp_path / "foreign.pt")
    with pytest.raises(SeqtoolError, match="not a seqtool checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(SeqtoolError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_keep_last_and_best_survive_pruning(tmp_path):
    ckpt = CheckpointDir(tmp_path, keep_last=2, keep_best=1)
    for step, best in [(1, True), (2, False), (3, False), (4, False)]:
        ckpt.save(step, {**PAYLOAD, "trainer": {"step": step}}, best_steps=[1], is_best=best)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "latest.pt", "step_00000001.pt", "step_00000003.pt", "step_00000004.pt"]
    assert load_checkpoint(tmp_path / "latest.pt")["trainer"]["step"] == 4
    assert load_checkpoint(tmp_path / "best.pt")["trainer"]["step"] == 1
