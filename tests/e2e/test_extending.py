"""A model defined and registered here, outside the package, trains, evaluates and decodes through the
CLI: what README's "Extending seqtool" promises (a config, a module keeping a contract of
seqtool/models/base.py, one registration)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest
import torch
from pydantic import Field
from torch import nn
from typer.testing import CliRunner

from seqtool.cli import app
from seqtool.models.base import Rows, Seq2SeqModel, StepOut, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.registry import MODELS
from seqtool.specials import PAD


class BagConfig(ModelConfig):
    arch: Literal["bag_of_words_s2s"] = "bag_of_words_s2s"
    tasks: ClassVar[tuple[str, ...]] = ("translation",)
    dim: int = Field(16, gt=0, description="embedding size")


@dataclass
class Context(Rows):
    mean: torch.Tensor  # (B, D) mean source embedding


@dataclass
class NoState(Rows):
    steps: torch.Tensor  # (N,) decoding steps taken; the model needs no memory of its own


class BagOfWords(Seq2SeqModel):
    """The next word from the previous one and the mean source embedding: small, but a full contract."""

    def __init__(self, cfg: BagConfig, sizes: VocabSizes):
        super().__init__()
        self.src = nn.Embedding(sizes.src, cfg.dim, padding_idx=PAD)
        self.tgt = nn.Embedding(sizes.tgt, cfg.dim, padding_idx=PAD)
        self.out = nn.Linear(cfg.dim, sizes.tgt)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Context:
        mask = src_mask.unsqueeze(-1).float()
        return Context((self.src(src) * mask).sum(1) / mask.sum(1))

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.tgt(tgt_in) + self.encode(src, src_mask).mean.unsqueeze(1))

    def start(self, enc: Context) -> NoState:
        return NoState(torch.zeros(enc.mean.size(0), dtype=torch.long, device=enc.mean.device))

    def step(self, prev: torch.Tensor, state: NoState, enc: Context) -> StepOut:
        features = torch.tanh(self.tgt(prev) + enc.mean)
        return StepOut(torch.log_softmax(self.out(features).float(), -1), None, NoState(state.steps + 1))



@pytest.fixture
def registered(monkeypatch):
    """The model registered for one test (the registry is restored after it, so the key reference and
    the other tests see the package's models only)."""
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))
    MODELS.register("bag_of_words_s2s", config=BagConfig)(BagOfWords)

RECIPE = """
name: bag
task: translation
data:
  generate: {task: num2words, train: 400, valid: 30, test: 30, max_digits: 2}
  tokenizer: {kind: word, vocab_size: null, joint: false}
model: {arch: bag_of_words_s2s, dim: 12}
train: {max_steps: 20, validate_every: 10, batch_tokens: 400, checkpoint: {every: 10}}
decode: {beam: 2, max_len_a: 2.0, max_len_b: 3}
log: {tensorboard: false, progress: none}
"""


def test_a_model_registered_outside_the_package_trains_evaluates_and_decodes(registered, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bag.yaml").write_text(RECIPE, encoding="utf-8")
    runner = CliRunner()

    trained = runner.invoke(app, ["train", "bag.yaml"])
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout.strip().splitlines()[-1])["split"] == "test"

    evaluated = runner.invoke(app, ["eval", "--checkpoint", "runs/bag", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert metrics["step"] == 20 and {"bleu", "chrf", "ppl"} <= set(metrics)

    (tmp_path / "in.txt").write_text("1 2\n7\n4 0\n", encoding="utf-8")
    decoded = runner.invoke(app, ["translate", "--checkpoint", "runs/bag", "--input", "in.txt", "--beam", "3"])
    assert decoded.exit_code == 0, decoded.output
    assert len(decoded.stdout.splitlines()) == 3
