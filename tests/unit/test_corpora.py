"""Several corpora in one translation model (seqtool/data/corpora.py) on slices of Tatoeba de-en and
fr-en: the weighted draw of an epoch, the one-entry list against the plain form, tags on the source
or as the forced first target token, validation per corpus, and malformed entries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import seqtool.models  # noqa: F401  (registers the architectures)
import seqtool.tasks  # noqa: F401  (registers the tasks)
from seqtool.commands.runs import build_model
from seqtool.commands.train import train_recipe
from seqtool.data.corpora import held_out_split, weighted_draw
from seqtool.data.prepare import prepare
from seqtool.decoding.search import search
from seqtool.decoding.translate import translate_lines
from seqtool.recipe import recipe_from_dict
from seqtool.tasks.translation import TranslationTask
from tests.conftest import head, shared
from tests.reliability.test_bad_input import check_error, invoke

MODEL = {"arch": "transformer", "embed_dim": 16, "ffn_dim": 32, "heads": 2, "encoder_layers": 1,
         "decoder_layers": 1, "share_embeddings": True}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """400 Tatoeba pairs of each language (past the shortest ones), and de/en files of the German ones."""
    root = tmp_path_factory.mktemp("tatoeba")
    head(shared("tatoeba-deu-eng", "deu.txt"), root / "deu.txt", 400, skip=60000)
    head(shared("tatoeba-fra-eng", "fra.txt"), root / "fra.txt", 400, skip=60000)
    pairs = [line.split("\t") for line in (root / "deu.txt").read_text(encoding="utf-8").splitlines()]
    for side, column in (("de", 1), ("en", 0)):
        (root / f"train.{side}").write_text("".join(p[column] + "\n" for p in pairs[:350]), encoding="utf-8")
        (root / f"valid.{side}").write_text("".join(p[column] + "\n" for p in pairs[350:]), encoding="utf-8")
    return root


def recipe(root: Path, name: str, data: dict, **train):
    return recipe_from_dict({
        "name": name, "output_dir": str(root / "runs" / name), "model": MODEL,
        "data": {"tokenizer": {"kind": "sentencepiece", "vocab_size": 300}, "held_out": 20, **data},
        "train": {"max_steps": 4, "batch_tokens": 400, "validate_every": 2, "threads": 1, **train},
        "decode": {"beam": 2, "max_len_b": 4, "max_output": 8},
        "eval": {"valid_decode_limit": 5},
        "log": {"tensorboard": False, "progress": "none", "every": 2}})


def tatoeba(tag_side: str) -> dict:
    """de->en and en->de from one file: two target languages, so the tags differ."""
    return {"tag_side": tag_side, "train": [
        {"name": "de-en", "tsv": "deu.txt", "columns": [1, 0], "tag": "<2en>"},
        {"name": "en-de", "tsv": "deu.txt", "columns": [0, 1], "tag": "<2de>", "weight": 3}]}


def task_for(r) -> TranslationTask:
    return TranslationTask(r, prepare(r, log=lambda _: None), torch.device("cpu"))


def test_draw_follows_the_weights_and_is_a_function_of_seed_and_epoch():
    draw = weighted_draw([1000, 300], [1, 3], seed=1, epoch=0)
    assert len(draw) == 1300 and (draw < 1000).sum() == 325  # 1300 * 1/4 sentences of the first corpus
    seen = np.bincount(draw[draw >= 1000] - 1000)
    assert seen.min() == 3 and (seen == 4).sum() == 75  # 975 = 3 passes over 300 + 75 of them once more
    assert np.array_equal(draw, weighted_draw([1000, 300], [1, 3], seed=1, epoch=0))
    assert not np.array_equal(draw, weighted_draw([1000, 300], [1, 3], seed=1, epoch=1))
    assert np.array_equal(weighted_draw([50], [7], seed=3, epoch=2), np.arange(50))  # one corpus: all, once


def test_held_out_split_is_seeded_deduplicated_and_unseen(root):
    split = held_out_split(root / "deu.txt", (1, 0), 20, seed=1)
    assert split == held_out_split(root / "deu.txt", (1, 0), 20, seed=1)
    assert len(split["valid"]) == len(split["test"]) == 20
    held = {side for name in ("valid", "test") for pair in split[name] for side in pair}
    assert not held & {side for pair in split["train"] for side in pair}
    assert len(set(split["train"])) == len(split["train"])


def test_one_entry_list_equals_the_plain_form(root, monkeypatch):
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    files = {"src": "train.de", "tgt": "train.en"}
    valid = {"src": "valid.de", "tgt": "valid.en"}
    plain = task_for(recipe(root, "plain", {"train": files, "valid": valid}))
    listed = task_for(recipe(root, "listed", {"train": [files], "valid": [{"name": "v", **valid}]}))
    for name in ("train.src.bin", "train.tgt.bin", "tokenizer/src/spm.model"):
        assert (plain.directory / name).read_bytes() == (listed.directory / name).read_bytes(), name
    for epoch in (0, 1):
        assert all(np.array_equal(a, b) for a, b in zip(plain.epoch_batches(epoch), listed.epoch_batches(epoch),
                                                        strict=True))
    assert listed.data.corpus_splits("valid") == ["valid.v"]


def test_source_tags_lead_each_corpus_source(root, monkeypatch):
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    task = task_for(recipe(root, "source-tags", tatoeba("source")))
    train, tok = task.split("train"), task.vocabs.src
    counts = [c["sentences"] for c in task.data.manifest["splits"]["train"]["corpora"]]
    firsts = [int(train.src[i][0]) for i in range(len(train))]
    assert firsts == [tok.tag_id("<2en>")] * counts[0] + [tok.tag_id("<2de>")] * counts[1]
    assert task.vocabs.tag_side == "source" and all(int(train.tgt[i][0]) > 3 for i in range(len(train)))
    drawn = np.concatenate(task.epoch_batches(0))
    assert (drawn >= counts[0]).sum() == round(len(drawn) * 3 / 4)  # weights 1:3 by sentences


def test_target_tags_are_trained_forced_and_validated_per_pair(root, monkeypatch):
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    r = recipe(root, "target-tags", tatoeba("target"), early_stopping={"metric": "bleu"})
    train_recipe(r)
    task = task_for(r)
    tag = task.vocabs.tgt.tag_id("<2de>")
    train = task.split("train")
    assert int(train.tgt[len(train) - 1][0]) == tag and int(train.src[len(train) - 1][0]) > 3
    rows = [json.loads(line) for line in (root / "runs" / "target-tags" / "metrics.jsonl").read_text().splitlines()]
    valid = [row for row in rows if row["split"] == "valid"]
    assert len(valid) == 2
    for row in valid:
        assert row["bleu"] == pytest.approx((row["bleu/de-en"] + row["bleu/en-de"]) / 2)
        assert row["loss"] == pytest.approx((row["loss/de-en"] + row["loss/en-de"]) / 2)
    model = build_model(r, task.sizes()).eval()
    settings = r.decode.model_copy(update={"tag": "<2de>"})
    src = torch.tensor([task.vocabs.src.encode(["Guten Morgen."])[0] + [2]])
    hyps = search(model, src, src != 0, settings, first=tag)[0]
    assert all(h.tokens[0] == tag for h in hyps)
    (text,) = translate_lines(model, task.vocabs, ["Guten Morgen."], settings, device=torch.device("cpu"))
    assert text.text == task.vocabs.tgt.decode(hyps[0].tokens[1:])  # the forced tag is not shown


MALFORMED = {
    "missing tgt": ([{"src": "train.de"}], {}, ["data.train.0:", "needs both src and tgt"]),
    "negative weight": ([{"tsv": "deu.txt", "weight": -1}], {}, ["data.train.0.weight", "greater than 0"]),
    "unknown tag side": ([{"tsv": "deu.txt"}], {"tag_side": "middle"}, ["data.tag_side", "'middle'"]),
    "mismatched lines": ([{"src": "train.de", "tgt": "valid.en"}], {}, ["data.train.0:", "350 lines", "50"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_entries_fail_in_one_line(case, root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    train, data, needles = MALFORMED[case]
    raw = recipe(root, "bad", {"train": [{"src": "train.de", "tgt": "train.en"}]}).model_dump(mode="json")
    raw["data"] = {**raw["data"], "train": train, "valid": {"src": "valid.de", "tgt": "valid.en"}, **data}
    raw["output_dir"] = str(tmp_path / "run")
    (tmp_path / "r.yaml").write_text(json.dumps(raw), encoding="utf-8")
    code, _, err = invoke(["prepare", "r.yaml"], capsys, monkeypatch)
    check_error(code, err, *needles)
