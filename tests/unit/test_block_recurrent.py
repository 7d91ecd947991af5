"""Block-Recurrent Transformer (Hutchins et al. 2022): a segment in one call equals it block by block with the
state carried, the LM task's blocks with the carried state equal one pass, the gates' equations, the
recurrent-off model is a pure sliding window (nothing beyond the previous block), the T5 buckets, the
retrieval data, recipe checks, and a tiny model that trains, resumes exactly and reports retrieval accuracy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.data.batching import stream_blocks
from seqtool.errors import SeqtoolError
from seqtool.models.attention.block_recurrent import BlockRecurrentConfig, BlockRecurrentLM, Gate, t5_bucket
from tests.conftest import assert_causal

W = 4
VARIANTS = [dict(recurrent_layers=[1]), dict(recurrent_layers=[0, 2], gate="lstm", state_ffn=True, norm_first=False),
            dict(recurrent_layers=[])]


def tiny_model(**changes) -> BlockRecurrentLM:
    torch.manual_seed(0)
    cfg = BlockRecurrentConfig(**{**dict(embed_dim=16, ffn_dim=24, heads=2, layers=3, window=W, states=3,
                                         dropout=0.0), **changes})
    return BlockRecurrentLM(cfg, 40).eval()


@pytest.mark.parametrize("changes", VARIANTS)
def test_a_segment_in_one_call_equals_it_block_by_block(changes):
    model = tiny_model(**changes)
    x = torch.randint(4, 40, (3, 6 * W))
    whole, after = model(x)
    pieces, state = [], None
    for start, end in [(0, W), (W, 3 * W), (3 * W, 4 * W), (4 * W, 6 * W)]:
        features, state = model(x[:, start:end], state)
        pieces.append(features)
    assert torch.allclose(torch.cat(pieces, 1), whole, atol=1e-5)
    for ours, theirs in zip(state, after):
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))


@pytest.mark.parametrize("changes", VARIANTS[:2])
def test_the_lm_tasks_blocks_with_the_carried_state_equal_one_pass(changes):
    model = tiny_model(**changes)
    tokens = torch.randint(4, 40, (6 * 8 * W + 1,)).numpy()

    def total_nll(block_len: int, carry: bool = True) -> float:
        nll, state = 0.0, None
        for block in stream_blocks(tokens, 6, block_len):
            out = model.loss(block, state=state if carry else None)
            nll, state = nll + float(out.nll), out.state
        return nll

    whole = total_nll(8 * W)
    assert total_nll(2 * W) == pytest.approx(whole, rel=1e-5)
    assert total_nll(2 * W, carry=False) != pytest.approx(whole, rel=1e-4)  # the state matters


def test_a_later_token_never_changes_an_earlier_output():
    assert_causal(tiny_model(), 40, atol=1e-6)  # 30 tokens: the last block is padded


def test_without_recurrence_a_token_sees_its_own_block_and_the_one_before_only():
    x = torch.randint(4, 40, (2, 6 * W))
    changed = x.clone()
    changed[:, W + 1] = (changed[:, W + 1] - 3) % 36 + 4  # block 1
    window = tiny_model(recurrent_layers=[], layers=1)
    a, b = window(x)[0], window(changed)[0]
    assert torch.equal(a[:, : W + 1], b[:, : W + 1])
    assert not torch.allclose(a[:, 3 * W - 1], b[:, 3 * W - 1])  # block 2 sees block 1
    assert torch.equal(a[:, 3 * W :], b[:, 3 * W :])  # block 3 and later do not
    recurrent = tiny_model(recurrent_layers=[0], layers=1)
    a, b = recurrent(x)[0], recurrent(changed)[0]
    assert not torch.allclose(a[:, -1], b[:, -1])  # through the state, far beyond the window


def test_the_gates_compute_the_cards_equations():
    torch.manual_seed(0)
    c, z = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    fixed = Gate("fixed", 5)
    g = torch.sigmoid(fixed.bias)
    assert torch.allclose(fixed(c, z), c * g + z * (1 - g))
    lstm = Gate("lstm", 5)
    f = torch.sigmoid(z @ lstm.forget.weight.T + lstm.forget.bias + 1)
    i = torch.sigmoid(z @ lstm.input.weight.T + lstm.input.bias - 1)
    assert torch.allclose(lstm(c, z), c * f + z * i, atol=1e-6)
    zero = torch.zeros(1, 5)  # with z = 0 only the +1/-1 offsets and the small initial biases remain
    lstm.forget.bias.data.zero_()
    assert torch.allclose(lstm(torch.ones(1, 5), zero), torch.full((1, 5), 1 / (1 + math.exp(-1))))
    assert fixed.bias.abs().max() < 0.5 and lstm.input.bias.abs().max() < 0.5  # N(0, 0.1) starts


def test_t5_buckets_are_exact_near_and_logarithmic_far():
    buckets = t5_bucket(torch.arange(200)).tolist()
    assert buckets[:16] == list(range(16))
    assert buckets == sorted(buckets) and buckets[-1] == 31 and buckets[127] == 31
    assert buckets[32] == 16 + int(math.log(2) / math.log(8) * 16)


def test_recurrent_layers_and_segments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="one of the 2 layers"):
        BlockRecurrentConfig(layers=2, recurrent_layers=[2])
    with pytest.raises(ValueError, match="twice"):
        BlockRecurrentConfig(layers=2, recurrent_layers=[1, -1])
    recipe = _recipe(tmp_path, steps=1)
    recipe["data"]["block_len"] = 3 * W + 1
    with pytest.raises(SeqtoolError, match="multiple of model.window"):
        recipe_from_dict(recipe)
    recipe = _recipe(tmp_path, steps=1)
    recipe["data"]["tokenizer"] = {"kind": "sentencepiece"}
    with pytest.raises(SeqtoolError, match="retrieval needs data.tokenizer"):
        recipe_from_dict(recipe)
    recipe = _recipe(tmp_path, steps=1)
    recipe["task"], recipe["model"] = "translation", {"arch": "transformer"}
    with pytest.raises(SeqtoolError, match="retrieval makes running text; it needs task: lm"):
        recipe_from_dict(recipe)


def _recipe(out, steps: int) -> dict:
    return {
        "name": "b", "task": "lm", "seed": 1, "output_dir": str(out),
        "data": {"prepared_dir": str(out.parent / "data"),
                 "generate": {"task": "retrieval", "train": 24, "valid": 4, "test": 4, "doc_len": 96, "keys": 4,
                              "values": 4, "fillers": 4, "gaps": [10, 20], "band": 5},
                 "tokenizer": {"kind": "word", "vocab_size": None}, "block_len": 4 * W},
        "model": {"arch": "block_recurrent", "embed_dim": 16, "ffn_dim": 32, "heads": 2, "layers": 2, "window": W,
                  "states": 4, "recurrent_layers": [1], "dropout": 0.1},
        "train": {"optimizer": {"lr": 3e-3}, "batch_size": 4, "max_steps": steps, "validate_every": 6,
                  "checkpoint": {"every": 6}},
        "eval": {"lm_streams": 2},
        "log": {"tensorboard": False, "progress": "none", "every": 1}}


def _train_losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").open()) if r["split"] == "train"}


def test_tiny_model_trains_resumes_exactly_and_reports_retrieval(tmp_path):
    from seqtool.commands.evaluate import evaluate_run
    from seqtool.commands.train import train_recipe
    from seqtool.data.datasets import PreparedData
    from seqtool.data.vocab import Vocabs

    train_recipe(recipe_from_dict(_recipe(tmp_path / "straight", 12)))
    train_recipe(recipe_from_dict(_recipe(tmp_path / "broken", 6)))
    train_recipe(recipe_from_dict(_recipe(tmp_path / "broken", 12)), resume=True)
    assert _train_losses(tmp_path / "broken") == _train_losses(tmp_path / "straight")  # the state was carried

    data = PreparedData(tmp_path / "data")
    split = data.stream("valid")
    words = np.array(Vocabs.load(data.directory / "tokenizer").tgt.vocab)[np.asarray(split.tokens)]
    answers = np.flatnonzero(np.asarray(split.gaps))
    assert len(split.gaps) == len(split.tokens) and len(answers) > 10
    assert all(words[answers - 2] == "?") and all(w.startswith("v") for w in words[answers])
    for at in answers:  # the binding the gap points at binds the query's key to its value
        bound = at - 1 - int(split.gaps[at])
        assert words[bound] == f"{words[at - 1]}={words[at]}" and split.gaps[at] >= 10
        assert not any(w.startswith(f"{words[at - 1]}=") for w in words[bound + 1 : at - 1])

    result = evaluate_run(tmp_path / "straight", "test", {})
    assert 0.0 <= result["accuracy"] <= 1.0 and result["queries"] > 10
    assert {k for k in result if k.startswith("accuracy_gap")} <= {"accuracy_gap10", "accuracy_gap15",
                                                                  "accuracy_gap20", "accuracy_gap25"}
