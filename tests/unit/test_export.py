"""Export (seqtool/decoding/export.py): the encoder and decoder-step graphs of each model family, run by
onnxruntime or TorchScript behind the Seq2SeqModel contract, make seqtool's search find what the
PyTorch model finds (greedy and beam 5, coverage penalty on, padded batches of several widths)."""

from __future__ import annotations

import pytest
import torch

from seqtool.decoding.export import export_graphs, flatten, load_graphs, unflatten
from seqtool.decoding.search import search
from seqtool.models.base import VocabSizes
from seqtool.models.conv.convs2s import ConvS2S, ConvS2SConfig
from seqtool.models.recurrent.gnmt import GNMT, GNMTConfig
from seqtool.models.recurrent.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from seqtool.recipe.schema import DecodeSpec
from tests.conftest import padded_batch

MODELS = {
    "lstm": lambda: RNNSeq2Seq(RNNSeq2SeqConfig(embed_dim=12, hidden_dim=16, encoder_layers=2, decoder_layers=2,
                                                bidirectional=True, bridge=True, dropout=0.0), VocabSizes(40, 40)),
    # fairseq's start state: the encoder's final c at each row's length, packed in the traced graph
    "lstm_linear": lambda: RNNSeq2Seq(RNNSeq2SeqConfig(embed_dim=12, hidden_dim=16, encoder_hidden_dim=20,
                                                       input_feeding=True, bridge="linear", dropout=0.0),
                                      VocabSizes(40, 40)),
    "gnmt": lambda: GNMT(GNMTConfig(embed_dim=12, hidden_dim=16, encoder_layers=3, decoder_layers=3, bridge=True,
                                    dropout=0.0), VocabSizes(40, 40)),
    "convs2s": lambda: ConvS2S(ConvS2SConfig(embed_dim=12, out_embed_dim=12, dropout=0.0,
                                             encoder=[{"channels": 16, "kernel": 3, "repeat": 2}],
                                             decoder=[{"channels": 16, "kernel": 3, "repeat": 2}]),
                               VocabSizes(40, 40)),
}


def test_flatten_and_unflatten_round_trip_a_nested_state():
    model = MODELS["gnmt"]().eval()
    src, mask, _ = padded_batch(3)
    state = model.start(model.encode(src, mask))
    tensors = flatten(state)
    assert len(tensors) == 6  # (h, c) for each of three layers
    back = unflatten(state, iter([t + 1 for t in tensors]))
    assert all(torch.equal(a + 1, b) for a, b in zip(tensors, flatten(back)))


@pytest.mark.parametrize("arch, fmt", [("lstm", "onnx"), ("lstm", "torchscript"), ("lstm_linear", "onnx"),
                                       ("lstm_linear", "torchscript"), ("convs2s", "onnx"),
                                       ("convs2s", "torchscript"), ("gnmt", "onnx")])
def test_search_through_the_exported_graphs_finds_what_the_model_finds(arch, fmt, tmp_path):
    torch.manual_seed(0)
    model = MODELS[arch]().eval()
    sig, files = export_graphs(model, fmt, tmp_path)
    exported = load_graphs(tmp_path, fmt, files, sig)
    for rows, beam in ((6, 1), (5, 5), (1, 5)):  # batch and source width other than the export example's
        src, mask, _ = padded_batch(rows, seed=rows)
        settings = DecodeSpec(beam=beam, alpha=0.6, beta=0.2, max_len_a=1.0, max_len_b=4)
        ours, theirs = search(model, src, mask, settings), search(exported, src, mask, settings)
        for a, b in zip(ours, theirs):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
