"""The fixed held-out split of a corpus without one (data.tsv), on a real Tatoeba de-en slice."""

from __future__ import annotations

import pytest

from seqtool.data.heldout import held_out_split
from seqtool.errors import SeqtoolError
from tests.conftest import shared


def _pairs(lines: int = 4000) -> list[tuple[str, str]]:
    # the file's opening lines are its shortest sentences, where one English side has many translations
    with open(shared("tatoeba-deu-eng", "deu.txt"), encoding="utf-8") as handle:
        rows = [next(handle).rstrip("\n").split("\t") for _ in range(lines)]
    return [(de, en) for en, de in rows]


def test_split_is_fixed_sized_and_leaks_no_sentence():
    pairs = _pairs()
    split = held_out_split(pairs + pairs[:50], {"test": 200, "valid": 100}, seed=3)  # 50 exact duplicates
    assert split == held_out_split(pairs, {"test": 200, "valid": 100}, seed=3)  # duplicates dropped, same split
    assert split != held_out_split(pairs, {"test": 200, "valid": 100}, seed=4)
    assert 200 <= len(split["test"]) < 260 and 100 <= len(split["valid"]) < 160
    assert sorted(p for chosen in split.values() for p in chosen) == sorted(set(pairs))
    for side in (0, 1):
        seen = [{p[side] for p in split[name]} for name in ("train", "valid", "test")]
        assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2]), side


def test_a_tsv_line_without_the_columns_fails_naming_file_and_line(tmp_path, monkeypatch):
    from seqtool.commands.recipes import recipe_from_dict
    from seqtool.data.prepare import prepare

    (tmp_path / "pairs.tsv").write_text("Hi.\tHallo!\nRun!\tLauf!\nno tab here\n", encoding="utf-8")
    monkeypatch.setenv("SEQTOOL_DATA", str(tmp_path))
    recipe = recipe_from_dict({"name": "t", "output_dir": str(tmp_path / "run"),
                               "data": {"tsv": {"path": "pairs.tsv", "valid": 1, "test": 1}},
                               "model": {"arch": "rnn_seq2seq"}})
    with pytest.raises(SeqtoolError, match=r"pairs\.tsv:3: 1 tab-separated fields, data\.tsv needs 2"):
        prepare(recipe, log=lambda _: None)
    assert not (tmp_path / "run" / "data").exists()
