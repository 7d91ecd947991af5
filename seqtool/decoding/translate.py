"""Raw text in, detokenized translations out: tokenize, batch by length, search, restore order.

One path serves `translate`, `eval`, validation BLEU, the Python API and the server, so they always
agree. Input is processed in chunks, so memory stays bounded however long the input is; streaming
input (typed or piped in) is decoded as it arrives, whatever lines are waiting at a time. An input is
a line, or a Source: a line and the phrases its translation must contain (lexical constraints,
tokenized with the target tokenizer). With decode.alignment a translation also carries its word
alignment and the attention matrix it came from. A model trained on several corpora with tags takes
one (decode.tag): put on the source, or forced as the first target token and then dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from seqtool.data.batching import pad_rows
from seqtool.data.textio import chunked, waiting_chunks
from seqtool.data.vocab import Vocabs
from seqtool.decoding.alignment import word_alignment
from seqtool.decoding.search import Hypothesis, Phrases, search
from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import DecodeSpec
from seqtool.specials import EOS, SPECIALS, UNK
from seqtool.util.memory import release_freed_memory

CHUNK = 4096


@dataclass
class Source:
    text: str
    constraints: list[str] = field(default_factory=list)  # phrases the translation must contain


@dataclass
class AttentionMap:
    weights: np.ndarray  # (target pieces, then EOS's step; source pieces, then the source EOS)
    source: list[str]  # piece labels of the columns
    target: list[str]  # piece labels of the rows


@dataclass
class Translation:
    text: str  # best hypothesis, detokenized
    nbest: list[tuple[str, float]]  # (text, score) best first
    alignment: list[tuple[int, int]] | None = None  # (source word, target word) pairs of the best (decode.alignment)
    attention: AttentionMap | None = None  # the best hypothesis's attention (decode.alignment)


def decode_batches(lengths: np.ndarray, batch_tokens: int, batch_sentences: int | None = None) -> list[np.ndarray]:
    """Indices sorted by length (longest first) cut into batches of at most batch_tokens padded tokens
    and batch_sentences sentences."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = int(lengths[order[start]]) + 1
        size = max(1, min(batch_tokens // width, batch_sentences or len(order)))
        batches.append(order[start : start + size])
        start += size
    return batches


def translate_ids(model, sources: list[np.ndarray], settings: DecodeSpec, *, batch_tokens: int,
                  batch_sentences: int | None = None, device: torch.device,
                  generator: torch.Generator | None = None,
                  constraints: Phrases | None = None, first: int | None = None) -> list[list[Hypothesis]]:
    """Hypotheses for already-encoded sources (and the target-token phrases each must contain; the token
    each must start with), in input order."""
    results: list[list[Hypothesis] | None] = [None] * len(sources)
    lengths = np.fromiter((len(s) for s in sources), dtype=np.int64, count=len(sources))
    for index in decode_batches(lengths, batch_tokens, batch_sentences):
        src = pad_rows([sources[i] for i in index], suffix=EOS).to(device)
        phrases = None if constraints is None else [constraints[i] for i in index]
        for i, hyps in zip(index, search(model, src, src != 0, settings, generator, phrases, first)):
            results[i] = hyps
    return results


def encode_truncated(tokenizer, lines: list[str], limit: int, key: str, *, side: str = "source", first: int = 1,
                     warn: Callable[[str], None] = lambda _: None) -> list[np.ndarray]:
    """Token ids of lines numbered from `first`; a line over `limit` tokens (the setting `key`) is
    truncated with a warning naming it."""
    encoded = []
    for number, ids in enumerate(tokenizer.encode(lines), start=first):
        if len(ids) > limit:
            warn(f"line {number}: {len(ids)} {side} tokens, truncated to {key}={limit}")
            ids = ids[:limit]
        encoded.append(np.asarray(ids, dtype=np.int64))
    return encoded


def translate_lines(model, vocabs: Vocabs, lines: Iterable[str | Source], settings: DecodeSpec, *,
                    device: torch.device, warn: Callable[[str], None] = lambda _: None,
                    generator: torch.Generator | None = None, streaming: bool = False) -> Iterator[Translation]:
    """Translations of raw lines (or Sources), one per input, in order; over-long inputs are truncated
    and constraints with unknown target tokens dropped, each with a warning. Batch sizes and the input
    limit are the settings' too (decode.batch_tokens, batch_sentences, max_src_len).
    `streaming`: decode the lines already waiting instead of waiting for a full chunk (interactive input)."""
    number = 1
    lead, first = tag_ids(vocabs, settings.tag)
    for chunk in waiting_chunks(lines, CHUNK) if streaming else chunked(lines, CHUNK):
        items = [item if isinstance(item, Source) else Source(item) for item in chunk]
        sources = [np.concatenate([lead, ids]) for ids in encode_truncated(
            vocabs.src, [item.text for item in items], settings.max_src_len, "decode.max_src_len", first=number,
            warn=warn)]
        phrases = [_phrases(vocabs, item.constraints, number + i, warn) for i, item in enumerate(items)]
        number += len(items)
        for ids, hyps in zip(sources, translate_ids(model, sources, settings, batch_tokens=settings.batch_tokens,
                                                    batch_sentences=settings.batch_sentences, device=device,
                                                    generator=generator, first=first,
                                                    constraints=phrases if any(phrases) else None)):
            nbest = [(vocabs.tgt.decode(h.tokens[first is not None:]), h.score) for h in hyps]
            translation = Translation(nbest[0][0], nbest)
            if hyps[0].attention is not None:
                translation.alignment, translation.attention = _attention(vocabs, ids, hyps[0])
            yield translation
        release_freed_memory()


def tag_ids(vocabs: Vocabs, tag: str | None) -> tuple[np.ndarray, int | None]:
    """What a tag adds: the ids put before every source, and the forced first target token (or None)."""
    none = np.zeros(0, dtype=np.int64)
    if tag is None:
        return none, None
    if vocabs.tag_side is None:
        raise SeqtoolError(f"decode.tag {tag}: this model was trained without corpus tags")
    try:
        if vocabs.tag_side == "source":
            return np.asarray([vocabs.src.tag_id(tag)], dtype=np.int64), None
        return none, vocabs.tgt.tag_id(tag)
    except SeqtoolError as err:
        raise SeqtoolError(f"decode.{err}") from None


def _phrases(vocabs: Vocabs, constraints: list[str], number: int, warn: Callable[[str], None]) -> list[list[int]]:
    """Target ids of each constraint; one the target vocabulary cannot spell is dropped with a warning."""
    kept = []
    for text, ids in zip(constraints, vocabs.tgt.encode(constraints) if constraints else []):
        if UNK in ids or not ids:
            warn(f"line {number}: constraint {text!r} dropped: "
                 f"{'empty' if not ids else 'the target vocabulary cannot spell it'}")
        else:
            kept.append(ids)
    return kept


def _attention(vocabs: Vocabs, source: np.ndarray, best: Hypothesis) -> tuple[list[tuple[int, int]], AttentionMap]:
    """The best hypothesis's word alignment and its labelled attention matrix."""
    weights = best.attention.numpy()
    body = weights[: len(best.tokens)]  # without the EOS step
    pairs = word_alignment(body, vocabs.src.word_ids(source.tolist()), vocabs.tgt.word_ids(best.tokens))
    eos = SPECIALS[EOS]
    target = [vocabs.tgt.piece(t) for t in best.tokens] + [eos] * (weights.shape[0] - len(best.tokens))
    return pairs, AttentionMap(weights, [vocabs.src.piece(int(i)) for i in source] + [eos], target)
