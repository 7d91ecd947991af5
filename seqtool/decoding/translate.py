"""Raw text in, detokenized translations out: tokenize, batch by length, search, restore order.

One path serves `translate`, `eval`, validation BLEU, the Python API and the server, so they always
agree. Input is processed in chunks, so memory stays bounded however long the input is; streaming
input (typed or piped in) is decoded as it arrives, whatever lines are waiting at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from seqtool.data.batching import pad_rows
from seqtool.data.textio import chunked, waiting_chunks
from seqtool.data.vocab import Vocabs
from seqtool.decoding.search import Hypothesis, search
from seqtool.recipe.schema import DecodeSpec
from seqtool.specials import EOS
from seqtool.util.memory import release_freed_memory

CHUNK = 4096


@dataclass
class Translation:
    text: str  # best hypothesis, detokenized
    nbest: list[tuple[str, float]]  # (text, score) best first


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
                  generator: torch.Generator | None = None) -> list[list[Hypothesis]]:
    """Hypotheses for already-encoded sources, in input order."""
    results: list[list[Hypothesis] | None] = [None] * len(sources)
    lengths = np.fromiter((len(s) for s in sources), dtype=np.int64, count=len(sources))
    for index in decode_batches(lengths, batch_tokens, batch_sentences):
        src = pad_rows([sources[i] for i in index], suffix=EOS).to(device)
        for i, hyps in zip(index, search(model, src, src != 0, settings, generator)):
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


def translate_lines(model, vocabs: Vocabs, lines: Iterable[str], settings: DecodeSpec, *, device: torch.device,
                    warn: Callable[[str], None] = lambda _: None,
                    generator: torch.Generator | None = None, streaming: bool = False) -> Iterator[Translation]:
    """Translations of raw lines, one per line, in order; over-long inputs are truncated with a warning.
    Batch sizes and the input limit are the settings' too (decode.batch_tokens, batch_sentences, max_src_len).
    `streaming`: decode the lines already waiting instead of waiting for a full chunk (interactive input)."""
    number = 1
    for chunk in waiting_chunks(lines, CHUNK) if streaming else chunked(lines, CHUNK):
        sources = encode_truncated(vocabs.src, chunk, settings.max_src_len, "decode.max_src_len", first=number,
                                   warn=warn)
        number += len(chunk)
        for hyps in translate_ids(model, sources, settings, batch_tokens=settings.batch_tokens,
                                  batch_sentences=settings.batch_sentences, device=device, generator=generator):
            nbest = [(vocabs.tgt.decode(h.tokens), h.score) for h in hyps]
            yield Translation(nbest[0][0], nbest)
        release_freed_memory()
