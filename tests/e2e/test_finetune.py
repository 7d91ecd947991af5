"""Fine-tuning (train.init_from): a tiny Multi30k run adapted to a Tatoeba de-en slice."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.errors import SeqtoolError
from seqtool.recipe.overrides import merged
from tests.conftest import head, run_cli, shared
from tests.reliability.conftest import assert_one_line_error

MODEL = {"arch": "rnn_seq2seq", "embed_dim": 16, "hidden_dim": 32, "encoder_layers": 1, "decoder_layers": 1,
         "dropout": 0.0, "share_embeddings": True, "tie_embeddings": True}
BASE = {"recipe_version": 1, "task": "translation", "seed": 1, "model": MODEL,
        "train": {"optimizer": {"name": "adam", "lr": 1e-2}, "batch_tokens": 400, "validate_every": 3,
                  "checkpoint": {"every": 3}, "early_stopping": {"metric": "loss"}},
        "decode": {"beam": 1, "max_len_a": 1.0, "max_len_b": 3}, "eval": {"metrics": ["bleu"], "valid_beam": 1},
        "log": {"tensorboard": False, "progress": "none", "every": 1}}
PARENT = merged(BASE, {"name": "parent", "train": {"max_steps": 3},
                       "data": {"corpus": "multi30k", "tokenizer": {"vocab_size": 120}}})
CHILD = merged(BASE, {"name": "child", "model": {"dropout": 0.2},  # a dropout may differ from the parent's
                      "train": {"init_from": "runs/parent", "max_steps": 2},
                      "data": {"train": [{"name": "tatoeba", "tsv": "tatoeba.tsv", "columns": [1, 0]}],
                               "held_out": 20}})


def _train(root: Path, raw: dict, resume: bool = False) -> Path:
    from seqtool.commands.train import train_recipe

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQTOOL_DATA", str(root / "data"))
        patch.chdir(root)
        recipe = recipe_from_dict(raw)
        train_recipe(recipe, resume=resume)
    return root / recipe.run_dir()


def _checkpoint(run: Path, name: str = "latest.pt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    """A tiny Multi30k run (3 steps on 300 pairs), and a 400-pair Tatoeba slice under the same data root."""
    root = tmp_path_factory.mktemp("finetune")
    for stem, lines in (("train", 300), ("val", 30), ("test2016", 30)):
        for side in ("de", "en"):
            head(shared("multi30k", f"{stem}.{side}"), root / "data" / "multi30k" / f"{stem}.{side}", lines)
    head(shared("tatoeba-deu-eng", "deu.txt"), root / "data" / "tatoeba.tsv", 400, skip=20000)
    _train(root, PARENT)
    return root


def test_init_from_starts_from_the_parents_weights_and_tokenizer_with_a_fresh_state(parent):
    tiny_lr = merged(CHILD, {"output_dir": "fresh", "train": {"optimizer": {"lr": 1e-9}, "max_steps": 1}})
    run = _train(parent, tiny_lr)
    theirs, ours = _checkpoint(parent / "runs" / "parent"), _checkpoint(run)
    for name, tensor in theirs["model"].items():  # one step at lr 1e-9 from the parent's weights
        assert torch.allclose(ours["model"][name], tensor, atol=1e-6), name
    assert ours["tokenizer_sha256"] == theirs["tokenizer_sha256"]
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    assert manifest["fingerprint"]["tokenizer_sha256"] and manifest["tokenizer_sha256"]
    assert manifest["splits"]["test.tatoeba"]["sentences"] == 20  # the held-out split of the tsv slice
    state = ours["trainer"]
    assert (state["step"], state["best_step"]) == (1, 1) and theirs["trainer"]["step"] == 3
    assert all(s["step"] == 1 for s in ours["optimizer"]["state"].values())  # fresh Adam moments
    assert "fine-tuning from runs/parent (step 3); kept: weights only" in (run / "train.log").read_text()


def test_init_reset_empty_keeps_the_parents_optimizer_step_and_best(parent):
    # max_steps 3 is the parent's step already: nothing is trained, so the saved state is what was loaded
    keep_all = merged(CHILD, {"output_dir": "kept", "train": {"init_reset": [], "max_steps": 3}})
    theirs, ours = _checkpoint(parent / "runs" / "parent"), _checkpoint(_train(parent, keep_all))
    for name, tensor in theirs["model"].items():
        assert torch.equal(ours["model"][name], tensor), name
    for key, moments in theirs["optimizer"]["state"].items():
        assert all(torch.equal(ours["optimizer"]["state"][key][k], v) for k, v in moments.items())
    assert ours["trainer"]["step"] == 3
    assert ours["trainer"]["best_value"] == theirs["trainer"]["best_value"]


def test_resume_and_eval_of_a_fine_tuned_run_need_only_its_own_checkpoint(parent):
    from seqtool.commands.evaluate import evaluate_run

    run = _train(parent, merged(CHILD, {"output_dir": "resumed"}))
    (parent / "runs" / "parent").rename(parent / "gone")
    try:
        _train(parent, merged(CHILD, {"output_dir": "resumed", "train": {"max_steps": 4}}), resume=True)
        shutil.rmtree(run / "data")  # eval prepares it again, with the tokenizer the checkpoint carries
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SEQTOOL_DATA", str(parent / "data"))
            patch.chdir(parent)
            assert evaluate_run(run, "test", {})["step"] == 4
    finally:
        (parent / "gone").rename(parent / "runs" / "parent")
    assert "resumed from" in (run / "train.log").read_text() and _checkpoint(run)["trainer"]["step"] == 4


def test_a_model_that_does_not_match_the_parent_is_refused_naming_the_key(parent):
    (parent / "child.json").write_text(json.dumps(CHILD))  # JSON is YAML
    out = run_cli("train", "child.json", "--set", "model.hidden_dim=40", "--set", "output_dir=mismatch",
                  cwd=parent, env={"SEQTOOL_DATA": str(parent / "data")})
    last = assert_one_line_error(out.returncode, out.stderr, "train.init_from: model.hidden_dim differs", "32")
    assert out.stderr.strip() == last and not (parent / "mismatch").exists()


@pytest.mark.parametrize("target", ["child.yaml", "data", "missing"])
def test_an_init_from_that_is_no_seqtool_run_fails_cleanly(parent, target):
    (parent / "child.yaml").write_text("not a checkpoint\n")
    with pytest.raises(SeqtoolError, match=r"^train\.init_from: .*(not a|no such|no checkpoints)"):
        _train(parent, merged(CHILD, {"output_dir": f"bad-{target}", "train": {"init_from": target}}))
    assert not (parent / f"bad-{target}").exists()


def test_seqtool_prepare_of_a_fine_tuning_recipe_encodes_with_the_parents_tokenizer(parent):
    from seqtool.commands.tasks import prepare_task
    from seqtool.data.vocab import directory_sha256

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQTOOL_DATA", str(parent / "data"))
        patch.chdir(parent)
        prepared = prepare_task(recipe_from_dict(merged(CHILD, {"output_dir": "prepared"})))
        assert directory_sha256(parent / prepared / "tokenizer") == directory_sha256(
            parent / "runs" / "parent" / "data" / "tokenizer")
