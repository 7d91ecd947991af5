"""GCNN (Dauphin et al. 2017): causality, block-wise scoring with carried context equals scoring the
whole stream, the adaptive softmax loss equals its reference, the gates' formulas, weight norm and
initialization, recipe checks, and a tiny model that learns on a slice of PTB."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.data.batching import stream_blocks
from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes
from seqtool.models.conv.gcnn import GCNN, GCNNConfig, build_gcnn
from seqtool.models.conv.layers import apply_gate
from tests.conftest import assert_causal

BLOCKS = [{"channels": 16, "kernel": 3, "repeat": 2}, {"channels": 24, "kernel": 4, "bottleneck": 8},
          {"channels": 20, "kernel": 2}]
GATES = ["glu", "gtu", "relu", "tanh"]


def tiny_model(gate: str = "glu", adaptive: dict | None = None) -> GCNN:
    torch.manual_seed(0)
    cfg = GCNNConfig(embed_dim=8, blocks=BLOCKS, gate=gate, dropout=0.1, adaptive_softmax=adaptive)
    return GCNN(cfg, 60).eval()


@pytest.mark.parametrize("gate", GATES)
def test_a_future_token_never_changes_an_earlier_output(gate):
    assert_causal(tiny_model(gate), 60)


@pytest.mark.parametrize("adaptive", [None, {"cutoffs": [20, 40]}])
def test_blocks_with_carried_context_score_like_the_whole_stream(adaptive):
    model = tiny_model(adaptive=adaptive)
    torch.manual_seed(1)
    tokens = torch.randint(4, 60, (301,)).numpy()

    def total_nll(block_len: int, carry: bool = True) -> float:
        nll, state = 0.0, None
        for block in stream_blocks(tokens, 3, block_len):
            out = model.loss(block, state=state if carry else None)
            nll, state = nll + float(out.nll), out.state
        return nll

    whole = total_nll(100)  # one block per stream
    assert total_nll(2) == pytest.approx(whole, rel=1e-5)  # blocks shorter than the receptive field (10)
    assert total_nll(17) == pytest.approx(whole, rel=1e-5)
    assert total_nll(17, carry=False) != pytest.approx(whole, rel=1e-5)  # the carried context matters


def test_adaptive_softmax_loss_equals_the_reference():
    model = tiny_model(adaptive={"cutoffs": [20, 40]})
    torch.manual_seed(2)
    x = torch.randint(4, 60, (3, 12))
    targets = torch.randint(4, 60, (3, 12))
    targets[2, 8:] = 0
    batch = type("B", (), {"inputs": x, "targets": targets, "ntokens": int((targets != 0).sum()), "first": True})
    out = model.loss(batch)
    log_probs = model.adaptive.log_prob(model(x)[0].reshape(-1, 20))  # (B*T, V)
    keep = targets.view(-1) != 0
    reference = -log_probs[keep].gather(1, targets.view(-1, 1)[keep]).sum()
    assert out.loss.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(36), atol=1e-5)


def test_the_gates_compute_the_papers_formulas():
    y = torch.tensor([[[0.5, -1.0, 2.0, 0.0]]])
    a, b = y[..., :2], y[..., 2:]
    assert torch.allclose(apply_gate(y, "glu"), a * torch.sigmoid(b))
    assert torch.allclose(apply_gate(y, "gtu"), torch.tanh(a) * torch.sigmoid(b))
    assert torch.equal(apply_gate(y, "relu"), torch.tensor([[[0.5, 0.0, 2.0, 0.0]]]))
    assert torch.allclose(apply_gate(y, "tanh"), torch.tanh(y))
    glu, relu = tiny_model("glu"), tiny_model("relu")
    assert glu.blocks[0].convs[0].linear.out_features == 2 * relu.blocks[0].convs[0].linear.out_features == 32


def test_weight_norm_and_initialization():
    p = 0.1
    model = GCNN(GCNNConfig(embed_dim=64, blocks=[{"channels": 256, "kernel": 4, "repeat": 2}], dropout=p), 500)
    conv = model.blocks[0].convs[0].linear
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    assert torch.allclose(g.squeeze(1), v.norm(dim=1)) and torch.allclose(conv.weight, v)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(4 * (1 - p) / (4 * 256)), rel=0.02)
    assert model.embed.weight[1:].std().item() == pytest.approx(0.1, rel=0.03)
    relu = GCNN(GCNNConfig(embed_dim=64, blocks=[{"channels": 256, "kernel": 4}], gate="relu", dropout=p), 500)
    assert relu.blocks[0].convs[0].linear.weight.std().item() == pytest.approx(
        math.sqrt(2 * (1 - p) / (4 * 256)), rel=0.03)


def test_bottleneck_block_is_three_layers_with_one_residual():
    block = tiny_model().blocks[2]
    shapes = [(c.kernel, c.linear.in_features // c.kernel, c.linear.out_features // 2) for c in block.convs]
    assert shapes == [(1, 16, 8), (4, 8, 8), (1, 8, 24)]
    assert block.residual is not None and block.residual.in_features == 16


LM = {"name": "g", "task": "lm", "data": {"corpus": "ptb", "tokenizer": {"kind": "word", "vocab_size": 1000}},
      "model": {"arch": "gcnn", "adaptive_softmax": {"cutoffs": [200, 600]}}}


@pytest.mark.parametrize("changes,message", [
    ({"train": {"label_smoothing": 0.1}}, "train.label_smoothing needs a full softmax"),
    ({"model": {"arch": "gcnn", "adaptive_softmax": {"cutoffs": [200, 1000]}}}, "must stay below data.tokenizer"),
    ({"model": {"arch": "gcnn", "adaptive_softmax": {"cutoffs": [600, 200]}}}, "positive and increasing"),
    ({"model": {"arch": "gcnn", "gate": "bilinear"}}, "model.gate: Input should be"),
    ({"model": {"arch": "gcnn", "blocks": "[(850, 6)] * 3"}}, "model.blocks: Input should be a valid list"),
])
def test_bad_settings_fail_at_load(changes, message):
    with pytest.raises(SeqtoolError) as err:
        recipe_from_dict({**LM, **changes})
    assert message in str(err.value)


def test_cutoffs_beyond_the_vocabulary_fail_when_built():
    with pytest.raises(SeqtoolError, match="below the vocabulary size 50"):
        build_gcnn(GCNNConfig(adaptive_softmax={"cutoffs": [20, 50]}), VocabSizes(50, 50))


def test_tiny_model_learns_on_ptb(ptb_slice, tmp_path, monkeypatch):
    from seqtool.commands.train import train_recipe

    monkeypatch.setenv("SEQTOOL_DATA", str(ptb_slice))
    recipe = recipe_from_dict({
        "name": "g", "task": "lm", "output_dir": str(tmp_path / "run"),
        "data": {"corpus": "ptb", "tokenizer": {"kind": "word", "vocab_size": None}, "block_len": 32},
        "model": {"arch": "gcnn", "embed_dim": 32, "dropout": 0.0, "adaptive_softmax": {"cutoffs": [500, 2000]},
                  "blocks": [{"channels": 48, "kernel": 3, "repeat": 3}]},
        "train": {"optimizer": {"lr": 3e-3}, "batch_size": 16, "max_steps": 60, "validate_every": 1000,
                  "checkpoint": {"every": 1000}, "clip_norm": 1.0},
        "log": {"tensorboard": False, "progress": "none", "every": 10}})
    result = train_recipe(recipe)
    losses = [row["loss"] for row in map(json.loads, (tmp_path / "run" / "metrics.jsonl").open())
              if row["split"] == "train"]
    assert losses[-1] < 0.8 * losses[0]
    assert result["ppl"] < 1000
