"""GNMT: residual and bidirectional wiring, gradients to every layer, stepwise decoding equals teacher
forcing, rows independent of padding and neighbours, learning on a small task, config errors."""

import pytest
import torch

from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.gnmt import GNMT, GNMTConfig
from seqtool.models.recurrent.layers import BiRecurrent, Recurrent
from tests.conftest import assert_incremental_equals_forward, padded_batch

CONFIGS = [
    dict(encoder_layers=2, decoder_layers=2),
    dict(encoder_layers=4, decoder_layers=4, attention="general", tie_embeddings=True, share_embeddings=True,
         bridge=True),
    dict(encoder_layers=3, decoder_layers=5, residual_from=2, attention="dot"),
    dict(encoder_layers=8, decoder_layers=8, embed_dim=12),
    dict(encoder_layers=2, decoder_layers=3, accumulator_clip=0.5),  # every LSTM on the time loop, state and all
]


def _model(**options) -> GNMT:
    base = dict(embed_dim=16, hidden_dim=24, dropout=0.0)
    return GNMT(GNMTConfig(**(base | options)), VocabSizes(40, 40))


def _record(modules) -> list:
    seen = []
    for m in modules:
        m.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], out[0])))
    return seen


def test_encoder_is_bidirectional_at_the_bottom_and_residual_from_layer_three():
    model = _model(encoder_layers=5, decoder_layers=2).eval()
    layers = model.encoder.layers
    assert isinstance(layers[0], BiRecurrent) and all(type(m) is Recurrent for m in layers[1:])
    seen = _record(layers)
    src, mask, _ = padded_batch()
    memory = model.encode(src, mask).memory
    assert memory.shape == (4, 9, 24)
    assert seen[0][1].shape == (4, 9, 24)  # forward and backward halves of 12, concatenated
    reps = [inp for inp, _ in seen[1:]] + [memory]  # x^1 .. x^5: what each next layer reads
    for number in range(2, 6):  # layer n reads x^{n-1}; from layer 3 on its output adds it
        inp, out = seen[number - 1]
        assert torch.equal(inp, reps[number - 2])
        assert torch.allclose(reps[number - 1], out + inp if number >= 3 else out, atol=1e-6), number


def test_decoder_feeds_bottom_layer_attention_to_every_upper_layer_with_residuals():
    model = _model(encoder_layers=2, decoder_layers=4).eval()
    H = 24
    bottom = _record([model.bottom])
    attention = _record([model.attention])
    upper = _record(model.upper)
    src, mask, tgt = padded_batch()
    top = model(src, mask, tgt)
    assert top.shape == (4, 7, 24)
    assert torch.equal(attention[0][0], bottom[0][1])  # the query is the bottom layer's output
    context = attention[0][1]
    x = bottom[0][1]
    for number, (inp, out) in enumerate(upper, start=2):
        assert inp.shape == (4, 7, 2 * H)
        assert torch.equal(inp[..., :H], x) and torch.equal(inp[..., H:], context)
        x = out + x if number >= 3 else out
    assert torch.allclose(top, x)


@pytest.mark.parametrize("options", CONFIGS)
def test_gradients_reach_every_layer(options):
    model = _model(**(options | {"dropout": 0.2}))
    src, mask, tgt = padded_batch()
    model.out(model(src, mask, tgt)).logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("options", CONFIGS)
def test_stepwise_decoding_equals_teacher_forcing(options):
    model = _model(**options).eval()
    assert_incremental_equals_forward(model, *padded_batch())


@pytest.mark.parametrize("options", CONFIGS[:2])
def test_rows_do_not_see_padding_or_neighbours(options):
    model = _model(**options).eval()
    src, mask, tgt = padded_batch()
    full = model(src, mask, tgt)
    alone = model(src[3:4, :6], mask[3:4, :6], tgt[3:4])
    assert torch.allclose(full[3:4], alone, atol=1e-5)
    swapped = model(src.flip(0), mask.flip(0), tgt.flip(0)).flip(0)
    assert torch.allclose(full, swapped, atol=1e-5)


def test_learns_to_reverse_sequences():
    """Card 20 (e) in small: a 2+2 GNMT learns to reverse symbol strings (loss falls, accuracy rises)."""
    torch.manual_seed(0)
    model = _model(embed_dim=32, hidden_dim=64, attention="general", init_scale=None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def batch():
        body = torch.randint(4, 14, (64, 6))
        src = torch.cat([body, torch.full((64, 1), 2)], 1)
        rev = body.flip(1)
        return src, src != 0, torch.cat([torch.full((64, 1), 1), rev], 1), torch.cat([rev, torch.full((64, 1), 2)], 1)

    def accuracy(src, mask, tgt_in, tgt_out):
        with torch.no_grad():
            return (model.out(model(src, mask, tgt_in)).argmax(-1) == tgt_out).float().mean().item()

    held = batch()
    before = accuracy(*held)
    for _ in range(300):
        src, mask, tgt_in, tgt_out = batch()
        loss = torch.nn.functional.cross_entropy(model.out(model(src, mask, tgt_in)).transpose(1, 2), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before < 0.2 and accuracy(*held) > 0.9


def test_tied_embeddings_share_one_matrix_through_a_projection():
    model = _model(embed_dim=16, hidden_dim=24, tie_embeddings=True, share_embeddings=True)
    assert model.out.weight is model.tgt_embed.weight is model.src_embed.weight
    assert model.project.weight.shape == (16, 24)
    assert isinstance(_model().project, torch.nn.Identity)


@pytest.mark.parametrize("model,words", [
    ({"hidden_dim": 25}, "even hidden_dim"),
    ({"decoder_layers": 1}, "decoder_layers"),
    ({"encoder_layers": 9}, "encoder_layers"),
    ({"residual_from": 1}, "residual_from"),
    ({"bridge": True, "decoder_layers": 3}, "bridge needs"),
])
def test_bad_config_names_the_key(model, words):
    from seqtool.commands.recipes import recipe_from_dict

    raw = {"name": "x", "data": {"corpus": "multi30k"}, "model": {"arch": "gnmt", **model}}
    with pytest.raises(SeqtoolError, match=words):
        recipe_from_dict(raw)
