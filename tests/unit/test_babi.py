"""bAbI prepare: stories, questions, answers and supporting facts as the memory network sees them; the
missing-file message and missing_ok; idempotence."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seqtool.commands.recipes import recipe_from_dict
from seqtool.data.babi import BabiSplit, find_files, prepare_babi, task_file
from seqtool.data.vocab import Vocabs
from seqtool.errors import SeqtoolError
from tests.conftest import head, shared

RELEASE = "babi/tasks_1-20_v1-2"


def _recipe(tmp_path: Path, **babi):
    return recipe_from_dict({
        "name": "qa", "task": "qa", "output_dir": str(tmp_path / "run"),
        "data": {"babi": babi, "tokenizer": {"kind": "word", "vocab_size": None, "lowercase": True}},
        "model": {"arch": "memn2n", "memory_size": 50}, "train": {"early_stopping": {"metric": "accuracy"}}})


def _slice_root(tmp_path: Path, files: dict[str, int]) -> Path:
    """A data root holding the first lines of some real bAbI files ({set/name: lines})."""
    root = tmp_path / "data"
    for name, lines in files.items():
        head(shared(RELEASE, name), root / RELEASE / name, lines)
    return root


def test_stories_questions_answers_and_support(tmp_path, monkeypatch):
    name = f"en/{task_file(1, 'train')}"
    root = _slice_root(tmp_path, {name: 600, f"en/{task_file(1, 'test')}": 60})
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    messages = []
    out = prepare_babi(_recipe(tmp_path, set="en", tasks=[1], memory_size=3), messages.append)
    vocab = Vocabs.load(out / "tokenizer").src
    train = BabiSplit(out, "train")
    # story 1: "1 Mary moved to the bathroom. 2 John went to the hallway. 3 Where is Mary? bathroom 1"
    first = train.collate(np.array([0]))
    assert [vocab.decode(s) for s in first.story[0].tolist()] == ["john went to the hallway",
                                                                 "mary moved to the bathroom"]
    assert vocab.decode(first.query[0].tolist()) == "where is mary"
    assert vocab.piece(int(first.answer[0])) == "bathroom" and int(first.task[0]) == 1
    assert first.support[0].tolist() == [1, -1, -1]  # statement 1 is the older of the two: slot 1
    # question 4 ("12 Where is Daniel? office 11") sees 3 of its 8 statements, the newest (line 11) in slot 0;
    # question 5 ("15 Where is Sandra? bathroom 8"): line 8 is older than its 3 memories
    batch = train.collate(np.array([3, 4]))
    assert batch.story.shape[1] == 3 and batch.support.tolist() == [[0, -1, -1], [-1, -1, -1]]
    assert vocab.decode(batch.story[0, 0].tolist()) == "daniel travelled to the office"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["train"]["questions"] + manifest["splits"]["valid"]["questions"] == 200
    assert manifest["splits"]["valid"]["questions"] == 20  # 10% as whole stories of 5 questions
    prepare_babi(_recipe(tmp_path, set="en", tasks=[1], memory_size=3), messages.append)
    assert "up to date" in messages[-1]


def test_a_missing_file_is_named_and_missing_ok_goes_on(tmp_path, monkeypatch):
    root = _slice_root(tmp_path, {f"en-10k/{task_file(1, 'train')}": 300, f"en-10k/{task_file(1, 'test')}": 60,
                                  f"en-10k/{task_file(3, 'test')}": 60})
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    with pytest.raises(SeqtoolError) as err:
        prepare_babi(_recipe(tmp_path, set="en-10k", tasks=[1, 3]), print)
    assert "missing en-10k/qa3_three-supporting-facts_train.txt" in str(err.value)
    assert "data.babi.missing_ok=true" in str(err.value)
    messages = []
    out = prepare_babi(_recipe(tmp_path, set="en-10k", tasks=[1, 3], missing_ok=True), messages.append)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tasks"] == [1] and manifest["skipped"] == {"3": "en-10k/qa3_three-supporting-facts_train.txt"}
    assert any("task 3 skipped: missing en-10k/qa3_three-supporting-facts_train.txt" in m for m in messages)
    assert set(BabiSplit(out, "test").tasks) == {1}
    shutil.rmtree(root / RELEASE / "en-10k")
    with pytest.raises(SeqtoolError, match="none of the requested task files"):
        prepare_babi(_recipe(tmp_path, set="en-10k", tasks=[1, 3], missing_ok=True), print)


def test_the_shared_release_lacks_exactly_the_10k_task_3_training_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQTOOL_DATA", str(shared(RELEASE).parents[1]))
    messages = []
    found, skipped = find_files(_recipe(tmp_path, set="en-10k", missing_ok=True).data.babi, messages.append)
    assert sorted(found) == [t for t in range(1, 21) if t != 3]
    assert skipped == {3: "en-10k/qa3_three-supporting-facts_train.txt"}
