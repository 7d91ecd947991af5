"""Fixtures of the serving tests (streaming translate, the server, the Python API, forced decoding):
one tiny quickstart-style translation run and one tiny PTB language model, each trained once for the
package, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_TRANSLATION, head, shared

LINES = ["1 2 3", "4 0 5", "9 9 9", "7", "3 0 0 1", "", "8 8", "6 5 4 3 2"]


def _train(directory: Path, recipe: str, steps: int, data_root: Path | None = None) -> Path:
    from seqtool.commands.recipes import load_recipe
    from seqtool.commands.train import train_recipe

    (directory / "r.yaml").write_text(recipe)
    overrides = [f"train.max_steps={steps}", f"train.validate_every={steps}", f"train.checkpoint.every={steps}",
                 "log.progress=none", f"output_dir={directory / 'run'}"]
    with pytest.MonkeyPatch.context() as patch:
        if data_root is not None:
            patch.setenv("SEQTOOL_DATA", str(data_root))
        train_recipe(load_recipe(directory / "r.yaml", overrides))
    return directory / "run"


@pytest.fixture(scope="package")
def run_dir(tmp_path_factory) -> Path:
    """A tiny num2words translation run (60 steps: short, varied outputs)."""
    return _train(tmp_path_factory.mktemp("translation"), TINY_TRANSLATION, 60)


@pytest.fixture(scope="package")
def lm_dir(tmp_path_factory) -> Path:
    """A tiny word-level LSTM language model on a slice of PTB."""
    root = tmp_path_factory.mktemp("lm")
    for split, n in {"train": 600, "valid": 50, "test": 50}.items():
        head(shared("ptb", f"ptb.{split}.txt"), root / "data" / "ptb" / f"ptb.{split}.txt", n)
    recipe = """
name: lm
task: lm
data: {corpus: ptb, tokenizer: {kind: word, vocab_size: null}, block_len: 10}
model: {arch: rnnlm, embed_dim: 16, hidden_dim: 16, layers: 1}
train: {optimizer: {name: sgd, lr: 1.0}, batch_size: 10, early_stopping: {metric: ppl}}
log: {tensorboard: false}
"""
    return _train(root, recipe, 60, root / "data")
