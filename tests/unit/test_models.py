"""Model contracts: stepwise decoding equals teacher forcing; padding and batching change nothing;
an LM scored block by block with carried state equals one long forward."""

import pytest
import torch

from seqtool.models.base import VocabSizes
from seqtool.models.recurrent.rnn import RNNLM, RNNLMConfig, RNNSeq2Seq, RNNSeq2SeqConfig
from tests.conftest import assert_incremental_equals_forward, padded_batch

SEQ2SEQ = [
    dict(cell="lstm", attention="general"),
    dict(cell="gru", attention="bahdanau", input_feeding=True),
    dict(cell="rnn", attention="dot", bidirectional=False, bridge=False),
    dict(cell="lstm", attention="bahdanau", tie_embeddings=True, share_embeddings=True),
    dict(cell="lstm", attention="general", encoder_hidden_dim=48, input_feeding=True, tie_embeddings=True),
    dict(cell="lstm", encoder_hidden_dim=48, input_feeding=True, tie_embeddings=True, bridge="linear"),
    dict(cell="gru", bridge="linear"),
    dict(cell="lstm", norm="layer", bridge="linear"),
]


@pytest.mark.parametrize("options", SEQ2SEQ)
def test_seq2seq_stepwise_equals_teacher_forcing(options):
    model = RNNSeq2Seq(RNNSeq2SeqConfig(embed_dim=16, hidden_dim=24, dropout=0.0, **options), VocabSizes(40, 40)).eval()
    assert_incremental_equals_forward(model, *padded_batch())


@pytest.mark.parametrize("options", SEQ2SEQ)
def test_seq2seq_rows_do_not_see_padding_or_neighbours(options):
    model = RNNSeq2Seq(RNNSeq2SeqConfig(embed_dim=16, hidden_dim=24, dropout=0.0, **options), VocabSizes(40, 40)).eval()
    src, mask, tgt = padded_batch()
    full = model(src, mask, tgt)
    alone = model(src[3:4, :6], mask[3:4, :6], tgt[3:4])
    assert torch.allclose(full[3:4], alone, atol=1e-5)


def test_gradients_reach_every_parameter():
    model = RNNSeq2Seq(RNNSeq2SeqConfig(embed_dim=16, hidden_dim=24, input_feeding=True), VocabSizes(40, 40))
    src, mask, tgt = padded_batch()
    model.out(model(src, mask, tgt)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_fairseq_lstm_shape_has_its_parameter_count():
    """fairseq 0.12.2 `--arch lstm` at the anchors' flags logs 8,630,784 parameters (per-direction 256,
    512-wide memory, input feeding, tied target embeddings, the decoder started from linear projections of
    the encoder's final h and c); ours has that and the output layer's bias. The tanh bridge projects h
    alone, so it has one projection fewer."""
    cfg = RNNSeq2SeqConfig(embed_dim=256, hidden_dim=256, encoder_hidden_dim=512, input_feeding=True,
                           tie_embeddings=True, bridge="linear")
    model = RNNSeq2Seq(cfg, VocabSizes(8000, 8000))
    count = sum(p.numel() for p in model.parameters())
    assert model.encoder.layers[0].fwd.layers[0].weight_hh_l0.shape == (1024, 256)
    assert model.attention.key_proj.in_features == 512
    assert count == 8_630_784 + 8000
    tanh = RNNSeq2Seq(cfg.model_copy(update={"bridge": "tanh"}), VocabSizes(8000, 8000))
    assert count - sum(p.numel() for p in tanh.parameters()) == 512 * 256 + 256


@pytest.mark.parametrize("cell", ["lstm", {"name": "lstm_peephole"}])
def test_state_at_each_length_equals_running_the_row_alone(cell):
    """Recurrent.to_lengths reads (h, c) where each row ends, as packing would, on the fused kernel and
    on the time loop alike."""
    from seqtool.models.recurrent.layers import Recurrent

    torch.manual_seed(0)
    layer = Recurrent(cell, 5, 7, 2).eval()
    x, lengths = torch.randn(4, 9, 5), torch.tensor([9, 3, 6, 3])
    outputs, finals = layer.to_lengths(x, lengths)
    assert torch.allclose(outputs, layer(x)[0], atol=1e-6)
    for row, length in enumerate(lengths.tolist()):
        alone = layer(x[row : row + 1, :length])[1]
        for got, want in zip(finals, alone[:2]):
            assert torch.allclose(got[row], want[0], atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_lm_blocks_with_carried_state_equal_one_pass(cell):
    model = RNNLM(RNNLMConfig(cell=cell, embed_dim=16, hidden_dim=16, layers=2), 30).eval()
    x = torch.randint(4, 30, (3, 12))
    full, _ = model(x)
    first, state = model(x[:, :5])
    second, _ = model(x[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-5)


def test_tied_lm_shares_one_matrix():
    model = RNNLM(RNNLMConfig(embed_dim=16, hidden_dim=16, tie_embeddings=True), 30)
    assert model.out.weight is model.embed.weight


def test_fused_loss_matches_cross_entropy_and_its_gradients():
    from torch import nn

    from seqtool.models.losses import output_loss

    torch.manual_seed(0)
    out = nn.Linear(8, 50)
    feats = torch.randn(3, 7, 8, requires_grad=True)
    targets = torch.randint(4, 50, (3, 7))
    targets[0, 5:] = 0
    loss, nll = output_loss(feats, targets, out, 0.1)
    loss.backward()
    ours = [feats.grad.clone(), out.weight.grad.clone(), out.bias.grad.clone()]
    feats.grad = out.weight.grad = out.bias.grad = None
    logits = out(feats).view(-1, 50)
    ref = nn.functional.cross_entropy(logits, targets.view(-1), ignore_index=0, label_smoothing=0.1, reduction="sum")
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert nll.item() == pytest.approx(nn.functional.cross_entropy(logits, targets.view(-1), ignore_index=0,
                                                                   reduction="sum").item(), rel=1e-5)
    for a, b in zip(ours, [feats.grad, out.weight.grad, out.bias.grad]):
        assert torch.allclose(a, b, atol=1e-5)


def test_fast_dropout_keeps_the_expectation():
    from seqtool.models.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    y = drop(torch.ones(200_000))
    assert abs((y == 0).float().mean().item() - 0.3) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(drop.eval()(torch.ones(5)), torch.ones(5))
