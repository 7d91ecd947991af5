"""ConvS2S (Gehring et al. 2017): incremental decoding equals the full forward, rows are independent
of padding and neighbours, the paper's normalization, initialization and gradient scaling hold, bad
settings fail at load time, and a tiny model learns on a slice of Multi30k."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes
from seqtool.models.conv.convs2s import ConvS2S, ConvS2SConfig
from seqtool.models.conv.layers import scale_grad
from tests.conftest import (
    assert_incremental_equals_forward,
    assert_rows_independent,
    assert_search_independent_of_batch,
    padded_batch,
)

TINY = dict(embed_dim=16, out_embed_dim=12, dropout=0.1,
            encoder=[{"channels": 16, "kernel": 3, "repeat": 2}, {"channels": 24, "kernel": 4}],
            decoder=[{"channels": 16, "kernel": 3, "repeat": 2}, {"channels": 20, "kernel": 2}])


def tiny_model(**changes) -> ConvS2S:
    torch.manual_seed(0)
    return ConvS2S(ConvS2SConfig(**{**TINY, **changes}), VocabSizes(40, 40)).eval()


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_stepwise_decoding_equals_the_full_forward(rows):
    model = tiny_model()
    state = assert_incremental_equals_forward(model, *padded_batch(rows, seed=rows), attn_atol=1e-6)
    assert [left.shape[1] for left in state.lefts] == [2, 2, 1]  # k - 1 inputs per layer, not the prefix


def test_rows_do_not_see_padding_or_neighbours():
    assert_rows_independent(tiny_model())


def test_beam_search_does_not_depend_on_batch_size():
    assert_search_independent_of_batch(tiny_model())


@pytest.mark.parametrize("layer", [None, 0, -1])
def test_step_attention_is_the_mean_over_layers_or_the_chosen_layer(layer):
    model = tiny_model(attention_layer=layer)
    src, mask, tgt = padded_batch(2, seed=2)
    enc = model.encode(src, mask)
    seen = []
    hooks = [a.register_forward_hook(lambda _m, _i, out: seen.append(out[1])) for a in model.attention]
    out = model.step(tgt[:, 0], model.start(enc), enc)
    for hook in hooks:
        hook.remove()
    assert len(seen) == 3
    assert torch.allclose(out.attn, (torch.stack(seen).mean(0) if layer is None else seen[layer])[:, 0])


def test_attention_layer_must_exist():
    with pytest.raises(ValueError, match="attention_layer 3 is not one of the 3 decoder layers"):
        ConvS2SConfig(**TINY, attention_layer=3)


def test_weight_norm_and_initialization_follow_the_paper():
    p = 0.2
    model = ConvS2S(ConvS2SConfig(dropout=p, encoder=[{"channels": 256, "kernel": 3, "repeat": 2}],
                                  decoder=[{"channels": 256, "kernel": 3}]), VocabSizes(500, 500))
    conv = model.encoder.layers[0].conv.linear
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    # w = g v / ||v|| per output unit, g starting at ||v|| so that w starts at v
    assert torch.allclose(g.squeeze(1), v.norm(dim=1))
    assert torch.allclose(conv.weight, v)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(4 * (1 - p) / (3 * 256)), rel=0.02)
    assert model.attention[0].query.weight.std().item() == pytest.approx(math.sqrt(1 / 256), rel=0.03)
    assert model.encoder.fc1.weight.std().item() == pytest.approx(math.sqrt((1 - p) / 256), rel=0.03)
    assert model.embed.words.weight[1:].std().item() == pytest.approx(0.1, rel=0.03)
    assert model.embed.words.weight[0].abs().sum() == 0
    assert all(b.abs().sum() == 0 for name, b in model.named_parameters() if name.endswith("bias"))


def test_encoder_gradients_are_scaled_by_the_number_of_attention_layers():
    x = torch.ones(3, requires_grad=True)
    scale_grad(x, 0.25).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 0.25))
    model = tiny_model(dropout=0.0)
    src, mask, tgt = padded_batch(3, seed=3)
    grads = []
    for factor in (model.encoder.grad_factor, 1.0):
        model.zero_grad()
        model.encoder.grad_factor = factor
        model.out(model(src, mask, tgt)).logsumexp(-1).sum().backward()
        grads.append(model.encoder.layers[0].conv.linear.parametrizations.weight.original1.grad.clone())
    assert torch.allclose(grads[0] * 3, grads[1], atol=1e-6)


RECIPE = {"name": "c", "task": "translation", "data": {"corpus": "multi30k"},
          "model": {"arch": "convs2s", "max_positions": 100}}


@pytest.mark.parametrize("data,decode,message", [
    ({"max_len": 200}, {"max_src_len": 50}, "data.max_len 200 (+ EOS) exceeds model.max_positions 100"),
    ({"max_len": 50}, {"max_src_len": 100, "max_len_a": 0.0}, "decode.max_src_len 100 (+ EOS) exceeds"),
    ({"max_len": 50}, {"max_src_len": 60, "max_len_a": 1.5, "max_len_b": 11}, "(101) exceeds model.max_positions"),
])
def test_sequences_longer_than_the_position_table_fail_at_load(data, decode, message):
    with pytest.raises(SeqtoolError) as err:
        recipe_from_dict({**RECIPE, "data": {"corpus": "multi30k", **data}, "decode": decode})
    assert message in str(err.value)


def test_coverage_penalty_is_accepted_since_the_model_has_attention():
    recipe = recipe_from_dict({**RECIPE, "data": {"corpus": "multi30k", "max_len": 50},
                               "decode": {"beta": 0.2, "max_src_len": 50}})
    assert recipe.decode.beta == 0.2


def test_tiny_model_learns_on_multi30k(multi30k_slice, tmp_path, monkeypatch):
    from seqtool.commands.train import train_recipe

    monkeypatch.setenv("SEQTOOL_DATA", str(multi30k_slice))
    recipe = recipe_from_dict({
        "name": "c", "task": "translation", "output_dir": str(tmp_path / "run"),
        "data": {"corpus": "multi30k", "tokenizer": {"kind": "word", "vocab_size": 1500}, "max_len": 30},
        "model": {"arch": "convs2s", "embed_dim": 32, "out_embed_dim": 32, "dropout": 0.0,
                  "encoder": [{"channels": 32, "kernel": 3, "repeat": 2}],
                  "decoder": [{"channels": 32, "kernel": 3, "repeat": 2}]},
        "train": {"optimizer": {"lr": 3e-3}, "batch_tokens": 1500, "max_steps": 60, "validate_every": 1000,
                  "checkpoint": {"every": 1000}},
        "decode": {"beam": 2, "max_len_b": 5, "max_src_len": 50}, "eval": {"valid_decode_limit": 20},
        "log": {"tensorboard": False, "progress": "none", "every": 10}})
    train_recipe(recipe)
    losses = [row["loss"] for row in map(json.loads, (tmp_path / "run" / "metrics.jsonl").open())
              if row["split"] == "train"]
    assert losses[-1] < 0.75 * losses[0]
