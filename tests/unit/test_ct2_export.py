"""CTranslate2 export of the Transformer (seqtool/decoding/ct2_export.py): CTranslate2 scores a target
with seqtool's log-probabilities for both norm placements and both position kinds, and a trained
Transformer exported by `seqtool export --format ctranslate2` translates as seqtool's greedy search.
Skipped where the ctranslate2 package (the `export` extra) is absent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seqtool.commands.export import export_run, load_ct2
from seqtool.commands.recipes import recipe_from_dict
from seqtool.commands.runs import load_run
from seqtool.data.tokenizer import WordTokenizer
from seqtool.data.vocab import Vocabs
from seqtool.decoding.ct2_export import pieces, save_ct2
from seqtool.decoding.translate import translate_lines
from seqtool.models.attention.transformer import Transformer, TransformerConfig
from seqtool.models.base import VocabSizes
from seqtool.specials import BOS, EOS, SPECIALS

ctranslate2 = pytest.importorskip("ctranslate2")

WORDS = WordTokenizer([*SPECIALS, *(f"w{i}" for i in range(36))])
VOCABS = Vocabs(WORDS, WORDS, joint=True)


@pytest.mark.parametrize("norm_first,positions", [(False, "sinusoidal"), (True, "learned")])
def test_ctranslate2_scores_a_target_as_seqtool_does(tmp_path, norm_first, positions):
    torch.manual_seed(0)
    cfg = TransformerConfig(embed_dim=16, ffn_dim=24, heads=4, encoder_layers=2, decoder_layers=2, dropout=0.0,
                            norm_first=norm_first, positions=positions, max_positions=32, activation="gelu",
                            share_embeddings=True)
    model = Transformer(cfg, VocabSizes(len(WORDS), len(WORDS))).eval()
    save_ct2(model, VOCABS, tmp_path)
    source, target = [7, 12, 30, 5, 9], [22, 8, 15, 31]
    with torch.no_grad():
        src = torch.tensor([source + [EOS]])
        features = model(src, src != 0, torch.tensor([[BOS, *target]]))
        ours = torch.log_softmax(model.out(features[0]), -1)[range(5), [*target, EOS]].numpy()
    tokens = pieces(WORDS)
    scored = ctranslate2.Translator(str(tmp_path)).score_batch([[tokens[i] for i in source]],
                                                             [[tokens[i] for i in target]])
    np.testing.assert_allclose(scored[0].log_probs, ours, atol=2e-4)


def test_a_trained_transformer_exported_translates_as_greedy_search(tmp_path):
    from seqtool.commands.train import train_recipe

    train_recipe(recipe_from_dict({
        "name": "t", "task": "translation", "seed": 1, "output_dir": str(tmp_path / "run"),
        "data": {"generate": {"task": "copy", "train": 600, "valid": 10, "test": 10, "max_len": 8},
                 "tokenizer": {"kind": "word", "vocab_size": None, "joint": True}},
        "model": {"arch": "transformer", "embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 2,
                  "decoder_layers": 2, "dropout": 0.0, "share_embeddings": True},
        "train": {"optimizer": {"lr": 1e-2}, "schedule": {"name": "inverse_sqrt", "warmup_steps": 20},
                  "batch_tokens": 800, "max_steps": 20, "validate_every": 1000, "checkpoint": {"every": 1000}},
        "decode": {"beam": 1, "max_len_a": 2.0, "max_len_b": 5},
        "log": {"tensorboard": False, "progress": "none", "every": 100}}))
    manifest = export_run(tmp_path / "run", "ctranslate2", tmp_path / "ct2")
    assert manifest["format"] == "ctranslate2" and "model.bin" in manifest["files"]["model"]
    run = load_run(tmp_path / "run")
    lines = (tmp_path / "run" / "data" / "raw" / "test.src").read_text().splitlines()[:8]
    cpu = torch.device("cpu")
    ours = [t.text for t in translate_lines(run.model, run.vocabs, lines, run.recipe.decode, device=cpu)]
    assert len(set(ours)) > 3
    assert load_ct2(tmp_path / "ct2").translate(lines, run.recipe.decode) == ours
