"""Generated sequence tasks, the music task, the rnn_sequence model and automaton extraction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.commands.runs import build_model
from seqtool.data.formal import DFA, TOMITA, counterexample, is_balanced, minimize
from seqtool.data.music import load_music
from seqtool.errors import SeqtoolError
from seqtool.evaluation.automaton import extract
from seqtool.models.base import VocabSizes
from seqtool.models.losses import objective_loss
from seqtool.tasks.sequence import SyntheticSpec, collate, describe_io, generate
from tests.conftest import run_cli, shared

TINY = {
    "name": "tiny-seq", "task": "synthetic",
    "data": {"synthetic": {"kind": "tomita", "grammar": 4, "train": 400, "valid": 100, "test": 100,
                           "train_lengths": [1, 8], "test_lengths": [10, 14]}},
    "model": {"arch": "rnn_sequence", "cell": "sr_gru", "hidden_dim": 8},
    "train": {"batch_size": 20, "max_steps": 6, "validate_every": 3, "optimizer": {"lr": 0.01},
              "early_stopping": {"metric": "accuracy"}},
    "log": {"tensorboard": False, "progress": "plain", "every": 3},
}


def spec(**fields) -> SyntheticSpec:
    return SyntheticSpec(**{"train": 50, "valid": 20, "test": 20, **fields})


@pytest.mark.parametrize("kind", ["copy", "denoise", "adding", "recall", "tomita", "dyck", "arma"])
def test_generators_are_deterministic_per_seed(kind):
    a = generate(spec(kind=kind, length=20, delays=[1, 3]), "train")
    b = generate(spec(kind=kind, length=20, delays=[1, 3]), "train")
    c = generate(spec(kind=kind, length=20, delays=[1, 3], seed=2), "train")
    d = generate(spec(kind=kind, length=20, delays=[1, 3]), "valid")
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("inputs", "targets", "weight", "offsets"))
    assert not np.array_equal(a.inputs[:100], c.inputs[:100]) and not np.array_equal(a.inputs[:100], d.inputs[:100])


def test_copy_layout_and_memoryless_baseline():
    """T = 100, K = 10, 8 symbols: blanks then the first K inputs; knowing only the layout, the best loss is
    K ln 8 / (T + 2K) = 0.173 (papers.md)."""
    examples, io = generate(spec(kind="copy", length=100), "train"), describe_io(spec(kind="copy"))
    batch = collate(examples, np.arange(20), io)
    symbols = batch.inputs.argmax(-1)
    assert torch.equal(batch.targets[:, 110:], symbols[:, :10]) and torch.all(batch.targets[:, :110] == 0)
    assert torch.all(symbols[:, 110] == 9) and batch.inputs.shape == (20, 120, 10)
    logits = torch.full((20, 120, 9), -1e9)
    logits[:, :110, 0] = 0.0
    logits[:, 110:, 1:] = 0.0  # uniform over the 8 symbols where they are recalled
    loss = objective_loss(logits, batch)[1] / batch.ntokens
    assert math.isclose(float(loss), 10 * math.log(8) / 120, rel_tol=1e-5)


def test_adding_targets_and_baseline():
    examples, io = generate(spec(kind="adding", length=50, train=2000), "train"), describe_io(spec(kind="adding"))
    batch = collate(examples, np.arange(2000), io)
    marked = (batch.inputs[..., 0] * batch.inputs[..., 1]).sum(1)
    torch.testing.assert_close(batch.targets[:, -1, 0], marked)
    assert torch.all(batch.inputs[:, :25, 1].sum(1) == 1) and torch.all(batch.inputs[:, 25:, 1].sum(1) == 1)
    mse = float(objective_loss(torch.ones(2000, 50, 1), batch)[1]) / batch.ntokens
    assert abs(mse - 1 / 6) < 0.02


def test_recall_heads_ask_for_delayed_symbols():
    task = spec(kind="recall", length=12, delays=[1, 4])
    examples, io = generate(task, "train"), describe_io(task)
    batch = collate(examples, np.arange(5), io)
    x = batch.inputs.argmax(-1)
    assert torch.equal(batch.targets[:, 4:, 1], x[:, :-4]) and torch.equal(batch.targets[:, 1:, 0], x[:, :-1])
    assert not batch.weight[:, :4, 1].any() and batch.weight[:, 4:, 1].all()


def test_formal_languages_are_labelled_right_and_lengths_follow_the_split():
    tomita = generate(spec(kind="tomita", grammar=3, test_lengths=(30, 40)), "test")
    dyck = generate(spec(kind="dyck", symbols=2, train_lengths=(2, 12)), "train")
    for examples, member in ((tomita, TOMITA[3].run), (dyck, lambda w: is_balanced(w, 2))):
        ends = examples.offsets[1:] - 1
        words = [examples.inputs[a:b] for a, b in zip(examples.offsets[:-1], examples.offsets[1:])]
        assert [bool(examples.targets[e]) for e in ends] == [member(w) for w in words]
        assert 0.25 < np.mean(examples.targets[ends]) < 0.75
    assert tomita.lengths().min() >= 30 and dyck.lengths().max() <= 12


def test_dfa_minimization_and_equivalence():
    redundant = DFA(((1, 4), (2, 0), (3, 0), (3, 3), (1, 4)), (True, True, True, False, True))  # Tomita 4, 0 twice
    assert len(minimize(redundant).accept) == 4 and counterexample(minimize(redundant), TOMITA[4]) is None
    assert counterexample(TOMITA[4], TOMITA[1]) == [0]


def test_extracted_automaton_is_the_network():
    """In evaluation an SR-GRU is its automaton: both label random strings identically."""
    torch.manual_seed(0)
    recipe = recipe_from_dict(TINY)
    model = build_model(recipe, VocabSizes(2, 2)).eval()
    dfa = extract(model)
    rng = np.random.default_rng(0)
    words = [rng.integers(0, 2, int(rng.integers(1, 30))) for _ in range(50)]
    for word in words:
        inputs = torch.nn.functional.one_hot(torch.from_numpy(word), 2).float().unsqueeze(0)
        label = int(model.out(model(inputs))[0, -1].argmax())
        assert dfa.run(word) == bool(label)


def test_music_piano_rolls(tmp_path):
    path = tmp_path / "music.json"
    pieces = {s: [[[60, 64], [], [62]], [[21]]] for s in ("train", "valid", "test")}
    path.write_text(json.dumps(pieces))
    examples = load_music(path, 21, 108)["valid"]
    assert examples.inputs.shape == (4, 88) and examples.targets[0, 60 - 21] == 1 == examples.targets[0, 64 - 21]
    assert not examples.inputs[0].any() and np.array_equal(examples.inputs[1], examples.targets[0])
    with pytest.raises(SeqtoolError, match="pitch 21 outside"):
        load_music(path, 36, 81)


def test_jsb_chorales_split_sizes():
    splits = load_music(shared("music", "jsb-chorales", "jsb-chorales-quarter.json"), 21, 108)
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [229, 76, 77]
    assert splits["train"].offsets[-1] == 13807


@pytest.mark.parametrize("change, message", [
    ({"task": "music", "train": {"early_stopping": {"metric": "loss"}}}, "data.synthetic is read by task 'synthetic'"),
    ({"model": {"arch": "rnn_sequence", "cell": "grux"}}, "did you mean 'gru'"),
    ({"model": {"arch": "rnn_sequence", "cell": "arma", "norm": "layer"}}, "takes no norm"),
    ({"data": {"synthetic": {"kind": "recall", "length": 8, "delays": [8]}}}, "delays"),
    ({"model": {"arch": "rnn_sequence", "norm": {"name": "atn", "window": -1}}}, "window"),
])
def test_bad_recipes_fail_with_the_key(change, message):
    with pytest.raises(SeqtoolError, match=message):
        recipe_from_dict({**TINY, **change})


def test_sr_gru_learns_tomita_and_its_automaton_is_the_grammar(tmp_path):
    """Trained with the straight-through snap, the SR-GRU is exact on longer strings than it saw, and
    the automaton read off it is Tomita 4's (the recipes/cells/tomita-srgru.yaml claim, in small)."""
    recipe = tmp_path / "tiny.yaml"
    learn = {"model": {"arch": "rnn_sequence", "hidden_dim": 16,
                       "cell": {"name": "sr_gru", "centroids": 8, "straight_through": True}},
             "train": {**TINY["train"], "max_steps": 300, "validate_every": 100}}
    recipe.write_text(json.dumps({**TINY, **learn, "output_dir": str(tmp_path / "run")}))
    trained = run_cli("train", str(recipe), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["accuracy"] == 1.0
    shown = run_cli("automaton", "-c", str(tmp_path / "run"), cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "Tomita 4: minimal DFA 4 states; extracted: exact (same language)" in shown.stdout
    assert "test automaton_accuracy\t1.0000" in shown.stdout
