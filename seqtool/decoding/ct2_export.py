"""A seqtool Transformer (models/attention/transformer.py) as a CTranslate2 model
(https://github.com/OpenNMT/CTranslate2, an inference engine with its own C++ search and int8 kernels):
the weights are placed into ctranslate2.specs.TransformerSpec, which CTranslate2 saves as model.bin;
the compute type (float32, int8, ...) is chosen when the model is loaded.

Where each seqtool weight goes (CTranslate2 holds y = x W^T + b as seqtool's nn.Linear does):
    word tables (scaled by sqrt(d) on both sides)     encoder.embeddings[0], decoder.embeddings
    position table P (rows 0, 1, ...)                 encoder/decoder.position_encodings.encodings
    self-attention query ; key_value (K rows, V rows) self_attention.linear[0] (one fused Q;K;V matrix)
    self-attention output W^O                         self_attention.linear[1]
    cross-attention query, key_value, output          attention.linear[0], linear[1] (K;V), linear[2]
    feed-forward inner, outer                         ffn.linear_0, ffn.linear_1
    layer norms 0, 1, last of a layer                 self_attention / attention / ffn .layer_norm
    pre-norm's final norm of a stack                  encoder/decoder.layer_norm
    output projection (no bias; tied or not)          decoder.projection
Post-norm (norm_first false) is CTranslate2's pre_norm=False: the same norms applied after each
residual sum. The paper's sinusoids interleave sin and cos, which is not CTranslate2's built-in table,
so seqtool's table is written out. The source gets </s> appended (add_source_eos) and decoding starts
from <s>, as in seqtool's search; the vocabularies are the tokenizers' pieces in id order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from seqtool.data.tokenizer import Tokenizer
from seqtool.data.vocab import Vocabs
from seqtool.errors import SeqtoolError
from seqtool.models.attention.transformer import Embedding, Layer, MultiHeadAttention, Transformer, sinusoids
from seqtool.recipe.schema import DecodeSpec
from seqtool.specials import BOS, PAD, SPECIALS

POSITIONS = 1024  # rows of a sinusoidal table: the longest source or output CTranslate2 can then run
INSTALL = "--format ctranslate2 needs the ctranslate2 package: pip install 'seqtool[export]'"


def _ct2():
    try:
        import ctranslate2
    except ImportError:
        raise SeqtoolError(INSTALL) from None
    return ctranslate2


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _linear(spec, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    spec.weight = _array(weight)
    if bias is not None:
        spec.bias = _array(bias)


def _norm(spec, norm: torch.nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _attention(spec, attn: MultiHeadAttention, self_attention: bool) -> None:
    """Self-attention fuses the query rows onto key_value's; cross-attention keeps them apart."""
    if self_attention:
        _linear(spec.linear[0], torch.cat([attn.query.weight, attn.key_value.weight]),
                torch.cat([attn.query.bias, attn.key_value.bias]))
    else:
        _linear(spec.linear[0], attn.query.weight, attn.query.bias)
        _linear(spec.linear[1], attn.key_value.weight, attn.key_value.bias)
    _linear(spec.linear[-1], attn.output.weight, attn.output.bias)


def _layer(spec, layer: Layer) -> None:
    _attention(spec.self_attention, layer.self_attn, True)
    _norm(spec.self_attention.layer_norm, layer.norms[0])
    if layer.cross_attn is not None:
        _attention(spec.attention, layer.cross_attn, False)
        _norm(spec.attention.layer_norm, layer.norms[1])
    _linear(spec.ffn.linear_0, layer.ffn.inner.weight, layer.ffn.inner.bias)
    _linear(spec.ffn.linear_1, layer.ffn.outer.weight, layer.ffn.outer.bias)
    _norm(spec.ffn.layer_norm, layer.norms[-1])


def _inputs(spec, embed: Embedding) -> None:
    table = embed.table.weight if embed.table is not None else sinusoids(torch.arange(POSITIONS), embed.dim)
    spec.position_encodings.encodings = _array(table)
    spec.scale_embeddings = True


def _stack(spec, stack, embed: Embedding) -> None:
    _inputs(spec, embed)
    for layer_spec, layer in zip(spec.layer, stack.layers, strict=True):
        _layer(layer_spec, layer)
    if isinstance(stack.norm, torch.nn.LayerNorm):
        _norm(spec.layer_norm, stack.norm)


def pieces(tokenizer: Tokenizer) -> list[str]:
    """The tokenizer's pieces by id (the specials named as CTranslate2 expects), each once."""
    tokens = [*SPECIALS, *(tokenizer.piece(i) for i in range(len(SPECIALS), len(tokenizer)))]
    if len(set(tokens)) != len(tokens):
        raise SeqtoolError("--format ctranslate2: the tokenizer has pieces spelled alike, which a CTranslate2 "
                           "vocabulary cannot tell apart")
    return tokens


def transformer_spec(model: Transformer, vocabs: Vocabs):
    """The TransformerSpec holding `model`'s weights (fp32) and `vocabs`' pieces."""
    specs = _ct2().specs
    first = model.encoder.layers[0]
    activation = (specs.Activation.RELU if isinstance(first.ffn.act, torch.nn.ReLU) else specs.Activation.GELU)
    spec = specs.TransformerSpec.from_config(
        (len(model.encoder.layers), len(model.decoder.layers)), first.self_attn.heads,
        pre_norm=first.norm_first, activation=activation, alignment_layer=model.attention_layer)
    with torch.no_grad():
        spec.encoder.embeddings[0].weight = _array(model.src_embed.words.weight)
        _stack(spec.encoder, model.encoder, model.src_embed)
        spec.decoder.embeddings.weight = _array(model.tgt_embed.words.weight)
        _stack(spec.decoder, model.decoder, model.tgt_embed)
        _linear(spec.decoder.projection, model.out.weight, None)
    spec.register_source_vocabulary(pieces(vocabs.src))
    spec.register_target_vocabulary(pieces(vocabs.tgt))
    spec.config.add_source_eos = True
    spec.config.layer_norm_epsilon = first.norms[0].eps
    return spec


def save_ct2(model: Transformer, vocabs: Vocabs, directory: Path) -> list[str]:
    """Write the CTranslate2 model into `directory`; returns the file names written."""
    spec = transformer_spec(model, vocabs)
    spec.validate()
    spec.optimize()  # aliases equal tables (tied embeddings) so they are stored once
    spec.save(str(directory))
    return sorted(p.name for p in directory.iterdir())


class Ct2Translator:
    """A saved CTranslate2 model behind seqtool's tokenizer: lines in, detokenized best outputs back."""

    def __init__(self, directory: Path, vocabs: Vocabs, *, compute_type: str = "default", threads: int = 1):
        self.translator = _ct2().Translator(str(directory), device="cpu", compute_type=compute_type,
                                            inter_threads=1, intra_threads=threads)
        self.vocabs = vocabs
        self.src_pieces = pieces(vocabs.src)
        self.tgt_ids = {piece: i for i, piece in enumerate(pieces(vocabs.tgt))}

    def translate(self, lines: list[str], settings: DecodeSpec, *, batch: int = 64, exact_limits: bool = True
                  ) -> list[str]:
        """Beam search (greedy at beam 1) under seqtool's output limit floor(a * |x|) + b (steps, </s>
        included) and with <pad> and <s> never produced, as seqtool's search does. CTranslate2 takes one
        limit a call, so with exact_limits the sentences go in groups of one limit; without, in one call
        under the largest limit (faster: full batches; only a sentence that reaches its limit differs).
        CTranslate2's length penalty divides by length^alpha, not GNMT's ((5 + length) / 6)^alpha; its
        coverage penalty is not used."""
        ids = self.vocabs.src.encode(lines)
        limits = [min(max(math.floor(settings.max_len_a * len(s)) + settings.max_len_b, 1), settings.max_output)
                  for s in ids]
        groups: dict[int, list[int]] = defaultdict(list)
        for i, limit in enumerate(limits):
            groups[limit if exact_limits else max(limits)].append(i)
        out: list[str] = [""] * len(lines)
        for limit, rows in groups.items():
            results = self.translator.translate_batch(
                [[self.src_pieces[t] for t in ids[i]] for i in rows], beam_size=settings.beam,
                max_batch_size=batch, length_penalty=settings.alpha, max_decoding_length=limit - 1,
                min_decoding_length=0,  # CTranslate2's default of 1 forbids the empty output seqtool allows
                suppress_sequences=[[SPECIALS[PAD]], [SPECIALS[BOS]]])
            for i, result in zip(rows, results):
                out[i] = self.vocabs.tgt.decode([self.tgt_ids[p] for p in result.hypotheses[0]])
        return out
