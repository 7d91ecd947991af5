"""Task classify: its generators (deterministic from the seed, labels checked by independent means), text
sources (bad input is one line, exit code 2), batches, and a tiny model trained and evaluated through
the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from seqtool.data import listops
from seqtool.data.classify import OFFSET, generated
from seqtool.tasks.classify import ListOpsSpec, XorSpec
from tests.reliability.test_bad_input import invoke


def flat(examples) -> bytes:
    return b"".join(t.tobytes() for t in examples.tokens) + np.asarray(examples.labels).tobytes()


@pytest.mark.parametrize("source, spec", [
    ("xor", XorSpec(length=40, train=60, valid=20, test=20)),
    ("listops", ListOpsSpec(min_length=10, max_length=40, max_depth=4, max_args=4, train=60, valid=20, test=20)),
])
def test_generators_are_deterministic_from_the_seed_and_splits_disjoint(source, spec):
    _, _, a = generated(source, spec)
    _, _, b = generated(source, spec)
    _, _, other = generated(source, spec.model_copy(update={"seed": 2}))
    _, _, more = generated(source, spec.model_copy(update={"train": 80}))
    assert all(flat(a[s]) == flat(b[s]) for s in a) and flat(a["train"]) != flat(other["train"])
    assert flat(a["test"]) == flat(more["test"])  # held-out splits do not move with the training size
    seen = [t.tobytes() for s in a.values() for t in s.tokens]
    assert len(set(seen)) == len(seen) == 100


def test_xor_labels_are_the_parity_of_the_marked_bits():
    spec = XorSpec(length=64, marks=3, levels=6, train=300, valid=5, test=5)
    names, classes, splits = generated("xor", spec)
    assert classes == ["0", "1"] and len(names) == 12
    for tokens, label in zip(splits["train"].tokens, splits["train"].labels):
        symbols = tokens.astype(int) - OFFSET
        marked = symbols[symbols >= spec.levels] - spec.levels
        assert len(tokens) == 64 and len(marked) == 3
        assert label == sum(b >= 3 for b in marked) % 2
    assert 0.4 < np.mean(splits["train"].labels) < 0.6


@pytest.mark.parametrize("text, value", [
    ("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]", 5),  # the LRA paper's example
    ("[MED 1 2 ]", 1), ("[MED 3 8 1 6 ]", 4), ("[SM 5 7 9 ]", 1), ("[MIN [SM 9 9 ] [MAX 0 7 ] ]", 7), ("6", 6),
])
def test_reference_evaluator(text, value):
    assert listops.evaluate(text.split()) == value


@pytest.mark.parametrize("text", ["[MAX 1 2", "]", "[MAX ]", "1 2", "[MAX 1 x ]"])
def test_reference_evaluator_refuses_malformed_expressions(text):
    with pytest.raises(ValueError):
        listops.evaluate(text.split())


def test_listops_labels_agree_with_the_reference_evaluator():
    rng = random.Random(0)
    for _ in range(300):
        symbols, value = listops.draw_expression(rng, min_length=8, max_length=60, max_depth=5, max_args=5)
        assert 8 <= len(symbols) <= 60 and symbols[0] < len(listops.OPERATORS)
        assert listops.evaluate([listops.SYMBOLS[s] for s in symbols]) == value
    assert listops.longest(3, 4) == 4 * (4 + 2) + 2


def test_listops_settings_that_cannot_be_met_are_refused():
    with pytest.raises(ValueError, match="no expression of depth 2"):
        ListOpsSpec(min_length=20, max_length=30, max_depth=2, max_args=5)


TINY = """# a tiny classify run
name: tiny
task: classify
data:
  xor: {length: 12, marks: 1, levels: 2, train: 600, valid: 100, test: 100}
model: {arch: rnn_classifier, embed_dim: 8, hidden_dim: 16}
train: {batch_size: 20, max_steps: 60, validate_every: 30, optimizer: {lr: 0.02}, early_stopping: {metric: accuracy},
        checkpoint: {every: 30}}
log: {tensorboard: false, progress: none}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LSTM trained through the CLI on a far bit (marks 1: the label is the marked value's bit)."""
    from typer.testing import CliRunner

    from seqtool.cli import app

    root = tmp_path_factory.mktemp("classify")
    (root / "tiny.yaml").write_text(TINY, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        result = CliRunner().invoke(app, ["train", "tiny.yaml"])
    assert result.exit_code == 0, result.output
    return root


def test_a_tiny_model_trains_above_chance_and_evaluates_through_the_cli(trained, capsys, monkeypatch):
    monkeypatch.chdir(trained)
    code, out, err = invoke(["eval", "-c", "runs/tiny", "--split", "test", "--json"], capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    assert result["task"] == "classify" and result["accuracy"] > 0.9 and result["loss"] < 0.4
    code, out, _ = invoke(["eval", "-c", "runs/tiny", "--split", "valid"], capsys, monkeypatch)
    assert code == 0 and "accuracy\t" in out


def test_epoch_batches_are_a_function_of_the_epoch(trained, monkeypatch):
    from seqtool.commands.recipes import load_recipe
    from seqtool.commands.tasks import open_task

    monkeypatch.chdir(trained)
    recipe = load_recipe(trained / "tiny.yaml")
    task = open_task(recipe, directory=trained / "runs" / "tiny" / "data")
    first, again, second = task.epoch_batches(3), task.epoch_batches(3), task.epoch_batches(4)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], second[0])
    assert sorted(np.concatenate(first).tolist()) == list(range(600))
    batch = task.batch(first[0])
    assert batch.tokens.shape == (20, 12) and batch.mask.all() and batch.ntokens == 20


TRAIN = "pos\tgood fine\nneg\tbad awful\npos\tgreat\nneg\tbad\n"
BAD_TEXT = {
    "no tab": ("pos good\n", ["valid.tsv:1", "expected label<TAB>text"]),
    "no text": ("pos\tgood\nneg\t  \n", ["valid.tsv:2", "no text after the label"]),
    "empty label": ("\tgood\n", ["valid.tsv:1", "empty label"]),
    "unknown label": ("pos\tgood\nmeh\tbad\n", ["valid.tsv:2", "label 'meh' does not occur in the training file"]),
    "bad bytes": (b"pos\tgo\xffod\n", ["valid.tsv:1", "invalid UTF-8"]),
    "empty file": ("", ["valid.tsv", "no examples"]),
}


@pytest.mark.parametrize("case", BAD_TEXT, ids=list(BAD_TEXT))
def test_bad_text_sources_fail_in_one_line(case, tmp_path, capsys, monkeypatch):
    content, needles = BAD_TEXT[case]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQTOOL_DATA", str(tmp_path))
    (tmp_path / "train.tsv").write_text(TRAIN, encoding="utf-8")
    (tmp_path / "valid.tsv").write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp_path / "r.yaml").write_text(
        "# text\nname: t\ntask: classify\ndata:\n  text: {train: train.tsv, valid: valid.tsv}\n"
        "  tokenizer: {kind: word, vocab_size: null}\nmodel: {arch: rnn_classifier}\n", encoding="utf-8")
    code, _, err = invoke(["prepare", "r.yaml"], capsys, monkeypatch)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("seqtool: error: "), err
    assert all(needle in lines[0] for needle in needles), lines[0]
    assert not (tmp_path / "runs" / "t" / "data").exists()


def test_one_label_only_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQTOOL_DATA", str(tmp_path))
    (tmp_path / "train.tsv").write_text("pos\ta\npos\tb\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text("# t\nname: t\ntask: classify\ndata:\n  text: {train: train.tsv, valid: "
                                     "train.tsv}\n  tokenizer: {kind: word, vocab_size: null}\n"
                                     "model: {arch: rnn_classifier}\n", encoding="utf-8")
    code, _, err = invoke(["prepare", "r.yaml"], capsys, monkeypatch)
    assert code == 2 and "one label only ('pos')" in err and len(err.strip().splitlines()) == 1
