"""Transformer (Vaswani et al. 2017): step-wise decoding with the key/value cache equals the full forward
(pre- and post-norm, both position kinds), the cache reorders with beam search, rows are independent of
padding and neighbours, the LM is causal, bad settings fail at load time, and tiny models learn (and
resume exactly) through the trainer."""

from __future__ import annotations

import json

import pytest
import torch

from seqtool.commands.recipes import recipe_from_dict
from seqtool.errors import SeqtoolError
from seqtool.models.attention.transformer import (
    Transformer,
    TransformerConfig,
    TransformerLM,
    TransformerLMConfig,
    sinusoids,
)
from seqtool.models.base import VocabSizes
from seqtool.specials import PAD
from tests.conftest import (
    assert_causal,
    assert_incremental_equals_forward,
    assert_rows_independent,
    assert_search_independent_of_batch,
    padded_batch,
)

TINY = dict(embed_dim=16, ffn_dim=24, heads=4, encoder_layers=2, decoder_layers=3, dropout=0.1,
            attention_dropout=0.1, activation_dropout=0.1, max_positions=64)
KINDS = [(norm_first, positions) for norm_first in (False, True) for positions in ("sinusoidal", "learned")]


def tiny_model(**changes) -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(**{**TINY, **changes}), VocabSizes(40, 40)).eval()


@pytest.mark.parametrize("norm_first,positions", KINDS)
@pytest.mark.parametrize("rows", [1, 5])
def test_stepwise_decoding_with_the_cache_equals_the_full_forward(norm_first, positions, rows):
    model = tiny_model(norm_first=norm_first, positions=positions)
    src, mask, tgt = padded_batch(rows, seed=rows)
    state = assert_incremental_equals_forward(model, src, mask, tgt, attn_atol=1e-6)
    assert [k.shape for k in state.keys] == [(rows, 4, tgt.size(1), 4)] * 3  # one cached key per step
    assert state.position.tolist() == [tgt.size(1)] * rows


def test_the_cache_moves_with_its_rows_when_search_reorders_them():
    model = tiny_model(norm_first=True)
    src, mask, tgt = padded_batch(4, seed=4)
    pick = torch.tensor([2, 2, 0, 3])  # beams duplicate, drop (row 1) and permute rows
    full = torch.log_softmax(model.out(model(src[pick], mask[pick], tgt[pick])), -1)
    enc = model.encode(src, mask)
    state = model.start(enc)
    for t in range(3):
        state = model.step(tgt[:, t], state, enc).state
    enc, state = enc.reorder(pick), state.reorder(pick)
    for t in range(3, tgt.size(1)):
        out = model.step(tgt[pick, t], state, enc)
        state = out.state
        assert torch.allclose(out.log_probs, full[:, t], atol=1e-5), t


def test_a_beam_keeps_the_encoder_keys_once_per_sentence_and_steps_as_the_forward():
    model = tiny_model()
    src, mask, tgt = padded_batch(3, seed=3)
    beams = torch.arange(3).repeat_interleave(4)  # as beam search's start: each sentence's rows together
    full = torch.log_softmax(model.out(model(src[beams], mask[beams], tgt[beams])), -1)
    enc = model.encode(src, mask).reorder(beams)
    assert [k.size(0) for k in enc.keys] == [3] * 3
    state, rows = model.start(enc), torch.arange(12)
    for t in range(tgt.size(1)):
        if t == 2:  # sentence 1 finishes and leaves: still one stored row per sentence
            keep = torch.cat([torch.arange(4), torch.arange(8, 12)])
            enc, state, rows = enc.reorder(keep), state.reorder(keep), rows[keep]
            assert [k.size(0) for k in enc.keys] == [2] * 3
        out = model.step(tgt[beams[rows], t], state, enc)
        state = out.state
        assert torch.allclose(out.log_probs, full[rows, t], atol=1e-5), t
        assert torch.allclose(out.attn.sum(-1), torch.ones(rows.numel()), atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_rows_do_not_see_padding_or_neighbours(norm_first):
    assert_rows_independent(tiny_model(norm_first=norm_first))


def test_beam_search_does_not_depend_on_batch_size():
    assert_search_independent_of_batch(tiny_model())


@pytest.mark.parametrize("layer", [0, -1])
def test_step_attention_is_the_chosen_layers_mean_over_heads(layer):
    model = tiny_model(attention_layer=layer)
    src, mask, tgt = padded_batch(2, seed=2)
    enc = model.encode(src, mask)
    seen = []
    hooks = [lay.cross_attn.register_forward_hook(lambda _m, args, out: seen.append((args, out[1])))
             for lay in model.decoder.layers]
    out = model.step(tgt[:, 0], model.start(enc), enc)
    for hook in hooks:
        hook.remove()
    assert [weights is not None for _, weights in seen] == [i == layer % 3 for i in range(3)]
    (q, k, _v, key_mask), _ = seen[layer]
    scores = (q @ k.transpose(-1, -2) / 2.0).masked_fill(~key_mask[:, None, None, :], float("-inf"))  # d_k = 4
    assert torch.allclose(out.attn, scores.softmax(-1).mean(1)[:, 0], atol=1e-6)


def test_shared_and_tied_embeddings_are_one_table():
    model = tiny_model(share_embeddings=True, tie_embeddings=True)
    assert model.src_embed.words.weight is model.tgt_embed.words.weight is model.out.weight
    untied = tiny_model(tie_embeddings=False)
    assert untied.out.weight is not untied.tgt_embed.words.weight
    assert untied.src_embed.words.weight is not untied.tgt_embed.words.weight


def test_initialisation_is_fairseqs():
    """Uniform bounds: W^Q, W^K, W^V sqrt(6 / 4d) each, W^O sqrt(6 / 2d) with a zero bias, the feed-forward
    layers and other biases 1 / sqrt(fan_in); embeddings N(0, d^-1/2) with a zero padding row."""
    torch.manual_seed(0)
    d, ffn = 64, 256
    model = Transformer(TransformerConfig(embed_dim=d, ffn_dim=ffn, heads=4, encoder_layers=1, decoder_layers=1),
                        VocabSizes(3000, 3000))
    layer = model.decoder.layers[0]

    def spans(t: torch.Tensor, bound: float) -> bool:  # uniform on [-bound, bound]
        return 0.97 * bound < t.abs().max().item() <= bound and abs(t.std().item() - bound / 3**0.5) < 0.05 * bound

    for attn in (layer.self_attn, layer.cross_attn):
        q, k, v = attn.query.weight, *attn.key_value.weight.chunk(2)
        assert all(spans(w, (6 / (4 * d)) ** 0.5) for w in (q, k, v))
        assert spans(attn.output.weight, (6 / (2 * d)) ** 0.5) and not attn.output.bias.any()
        assert spans(attn.key_value.bias, d**-0.5)
    assert spans(layer.ffn.inner.weight, d**-0.5) and spans(layer.ffn.inner.bias, d**-0.5)
    assert spans(layer.ffn.outer.weight, ffn**-0.5) and spans(layer.ffn.outer.bias, ffn**-0.5)
    words = model.src_embed.words.weight
    assert not words[PAD].any() and words.std().item() == pytest.approx(d**-0.5, rel=0.02)


def test_sinusoids_follow_the_paper():
    pe = sinusoids(torch.arange(50), 16)
    pos, i = 37, 3
    assert pe[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(pos / 10000 ** (2 * i / 16))).item(), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(pos / 10000 ** (2 * i / 16))).item(),
                                                      abs=1e-6)


def tiny_lm(**changes) -> TransformerLM:
    torch.manual_seed(0)
    cfg = TransformerLMConfig(**{"embed_dim": 16, "ffn_dim": 32, "heads": 2, "layers": 2, "max_positions": 40,
                                 **changes})
    return TransformerLM(cfg, 60).eval()


@pytest.mark.parametrize("norm_first,positions", KINDS)
def test_a_later_token_never_changes_an_earlier_lm_output(norm_first, positions):
    assert_causal(tiny_lm(norm_first=norm_first, positions=positions), 60, atol=1e-6)


def test_the_lm_scores_each_block_on_its_own():
    model = tiny_lm()
    x = torch.randint(4, 60, (2, 12))
    features, state = model(x, state=("anything", "carried"))
    assert state is None and torch.equal(features, model(x)[0])


MT = {"name": "t", "task": "translation", "data": {"corpus": "multi30k", "max_len": 50},
      "decode": {"max_src_len": 50, "max_len_a": 1.0}}


@pytest.mark.parametrize("model,message", [
    ({"arch": "transformer", "embed_dim": 30, "heads": 4}, "embed_dim 30 must be even and divisible by heads 4"),
    ({"arch": "transformer", "decoder_layers": 3, "attention_layer": 3}, "attention_layer 3 is not one of"),
    ({"arch": "transformer", "positions": "learned", "max_positions": 50}, "data.max_len 50 (+ EOS) exceeds"),
    ({"arch": "transformer", "positions": "rotary"}, "model.positions"),
    ({"arch": "transformer_lm"}, "task"),
])
def test_bad_settings_fail_at_load(model, message):
    with pytest.raises(SeqtoolError) as err:
        recipe_from_dict({**MT, "model": model})
    assert message in str(err.value)


def test_learned_positions_must_hold_an_lm_block():
    lm = {"name": "l", "task": "lm", "data": {"corpus": "ptb", "block_len": 64}}
    with pytest.raises(SeqtoolError, match="data.block_len 64 exceeds model.max_positions 32"):
        recipe_from_dict({**lm, "model": {"arch": "transformer_lm", "positions": "learned", "max_positions": 32}})
    recipe_from_dict({**lm, "model": {"arch": "transformer_lm", "max_positions": 32}})  # sinusoids have no limit


def _copy_recipe(tmp_path, name: str, steps: int) -> dict:
    return {
        "name": name, "task": "translation", "seed": 1, "output_dir": str(tmp_path / name),
        "data": {"generate": {"task": "copy", "train": 1500, "valid": 50, "test": 50, "max_len": 8},
                 "tokenizer": {"kind": "word", "vocab_size": None, "joint": True}},
        "model": {"arch": "transformer", "embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 2,
                  "decoder_layers": 2, "dropout": 0.1, "attention_dropout": 0.1, "share_embeddings": True,
                  "norm_first": True},
        "train": {"optimizer": {"lr": 1e-2}, "schedule": {"name": "inverse_sqrt", "warmup_steps": 20},
                  "batch_tokens": 800, "max_steps": steps, "validate_every": 40,
                  "checkpoint": {"every": 40, "keep_last": 5}, "early_stopping": {"metric": "bleu"}},
        "decode": {"beam": 2, "max_len_a": 1.0, "max_len_b": 3},
        "log": {"tensorboard": False, "progress": "none", "every": 10}}


def _train_rows(run) -> list[dict]:
    return [row for row in map(json.loads, (run / "metrics.jsonl").open()) if row["split"] == "train"]


def test_tiny_model_learns_to_copy_and_resumes_exactly(tmp_path):
    from seqtool.commands.train import train_recipe

    result = train_recipe(recipe_from_dict(_copy_recipe(tmp_path, "straight", 100)))
    losses = [row["loss"] for row in _train_rows(tmp_path / "straight")]
    assert losses[-1] < 0.5 * losses[0]
    assert result["bleu"] > 20

    train_recipe(recipe_from_dict(_copy_recipe(tmp_path, "broken", 40)))
    train_recipe(recipe_from_dict(_copy_recipe(tmp_path, "broken", 60)), resume=True)
    straight = {r["step"]: r["loss"] for r in _train_rows(tmp_path / "straight") if r["step"] <= 60}
    resumed = {r["step"]: r["loss"] for r in _train_rows(tmp_path / "broken")}
    assert resumed == straight


def test_tiny_lm_learns_on_ptb(ptb_slice, tmp_path, monkeypatch):
    from seqtool.commands.train import train_recipe

    monkeypatch.setenv("SEQTOOL_DATA", str(ptb_slice))
    recipe = recipe_from_dict({
        "name": "l", "task": "lm", "output_dir": str(tmp_path / "run"),
        "data": {"corpus": "ptb", "tokenizer": {"kind": "word", "vocab_size": None}, "block_len": 32},
        "model": {"arch": "transformer_lm", "embed_dim": 32, "ffn_dim": 64, "heads": 2, "layers": 2,
                  "dropout": 0.0},
        "train": {"optimizer": {"lr": 3e-3}, "batch_size": 16, "max_steps": 60, "validate_every": 1000,
                  "checkpoint": {"every": 1000}, "clip_norm": 1.0},
        "log": {"tensorboard": False, "progress": "none", "every": 10}})
    result = train_recipe(recipe)
    losses = [row["loss"] for row in _train_rows(tmp_path / "run")]
    assert losses[-1] < 0.8 * losses[0]
    assert result["ppl"] < 1500
