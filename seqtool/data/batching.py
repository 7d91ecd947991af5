"""Batches: length-bucketed token-budget batches for pairs, contiguous blocks for LM streams.

Batch order is a pure function of (seed, epoch), so a resumed run recomputes the epoch's batches
and skips the ones already consumed; under DDP each rank takes every world-th batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from seqtool.data.datasets import ParallelSplit
from seqtool.specials import BOS, EOS, PAD


@dataclass
class Seq2SeqBatch:
    src: torch.Tensor  # (B, S) source ids + EOS, right-padded
    src_mask: torch.Tensor  # (B, S) True on real tokens
    tgt_in: torch.Tensor  # (B, T) BOS + target
    tgt_out: torch.Tensor  # (B, T) target + EOS, PAD where padded
    ntokens: int  # real target tokens (EOS included)
    index: np.ndarray  # example ids, for restoring order

    def to(self, device: torch.device) -> Seq2SeqBatch:
        return _to(self, device)


@dataclass
class LMBatch:
    inputs: torch.Tensor  # (B, T)
    targets: torch.Tensor  # (B, T), PAD past the end of a stream
    ntokens: int
    first: bool  # the first block of a pass: recurrent state starts from zero

    def to(self, device: torch.device) -> LMBatch:
        return _to(self, device)


def _to(batch, device: torch.device):
    """Tensors to `device`; for CUDA through pinned memory, so the copy runs while the GPU computes."""
    def move(v):
        if not isinstance(v, torch.Tensor) or v.device == device:
            return v
        return (v.pin_memory() if device.type == "cuda" else v).to(device, non_blocking=True)

    return type(batch)(**{f.name: move(getattr(batch, f.name)) for f in fields(batch)})


def pad_rows(rows: list[np.ndarray], prefix: int | None = None, suffix: int | None = None) -> torch.Tensor:
    """Right-padded (len(rows), max_len) long tensor, optionally with a token before/after each row."""
    extra = (prefix is not None) + (suffix is not None)
    out = np.full((len(rows), max((len(r) for r in rows), default=0) + extra), PAD, dtype=np.int64)
    for i, row in enumerate(rows):
        start = int(prefix is not None)
        if prefix is not None:
            out[i, 0] = prefix
        out[i, start : start + len(row)] = row
        if suffix is not None:
            out[i, start + len(row)] = suffix
    return torch.from_numpy(out)


def collate_pairs(split: ParallelSplit, index: np.ndarray) -> Seq2SeqBatch:
    src = pad_rows([split.src[i] for i in index], suffix=EOS)
    tgt_rows = [split.tgt[i] for i in index]
    tgt_in = pad_rows(tgt_rows, prefix=BOS)
    tgt_out = pad_rows(tgt_rows, suffix=EOS)
    return Seq2SeqBatch(src, src != PAD, tgt_in, tgt_out, int((tgt_out != PAD).sum()), index)


def token_batches(src_lens: np.ndarray, tgt_lens: np.ndarray, *, batch_tokens: int,
                  max_sentences: int | None = None, seed: int = 0, epoch: int = 0,
                  shuffle: bool = True) -> list[np.ndarray]:
    """Group examples of similar length so that padded size (rows x longest side + 1) stays in budget.

    Examples are shuffled, then stably sorted by source and then target length (ties stay shuffled),
    as fairseq does; consecutive runs become batches, and the batch order is shuffled again.
    Sorting by target length first pads no less (3.9% against 4.2% on Multi30k), but then every
    target in a batch ends at the same position, and a ConvS2S trained so ended its outputs early
    (greedy 0.87 of the reference length after 500 updates, against 0.98 sorted by source; see
    bench/README.md).
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(src_lens)) if shuffle else np.arange(len(src_lens))
    order = order[np.lexsort((tgt_lens[order], src_lens[order]))]
    width = np.maximum(src_lens[order], tgt_lens[order]) + 1
    batches, start, longest = [], 0, 0
    for pos in range(len(order)):
        longest = max(longest, int(width[pos]))
        size = pos - start + 1
        if size > 1 and (size * longest > batch_tokens or (max_sentences and size > max_sentences)):
            batches.append(order[start:pos])
            start, longest = pos, int(width[pos])
    if start < len(order):
        batches.append(order[start:])
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def padding_fraction(batches: list[np.ndarray], src_lens: np.ndarray, tgt_lens: np.ndarray) -> float:
    """Share of padded positions in the source and target tensors these batches produce."""
    real = padded = 0
    for b in batches:
        for lens in (src_lens[b] + 1, tgt_lens[b] + 1):
            real += int(lens.sum())
            padded += int(lens.max()) * len(b)
    return 1.0 - real / max(padded, 1)


def poisson_batches(rng: np.random.Generator, count: int, expected: int) -> list[np.ndarray]:
    """count // expected batches of example indices, each example in each batch with probability
    expected / count independently (so a batch may be empty or hold more than `expected`)."""
    rate = min(expected / count, 1.0)
    return [np.flatnonzero(rng.random(count) < rate) for _ in range(max(count // expected, 1))]


def shard(batches: list, rank: int, world: int) -> list:
    """This rank's batches: every world-th one, the tail cut so all ranks take equally many steps."""
    usable = len(batches) - len(batches) % world
    return batches[rank:usable:world]


def stream_rows(values: np.ndarray, rows: int) -> np.ndarray:
    """A stream cut into `rows` contiguous rows, (rows, L + 1) with L = ceil((N-1)/rows): row r holds
    values [r*L, (r+1)*L], then PAD; each row's last value opens the next row."""
    n = len(values) - 1
    length = -(-n // rows)
    data = np.full((rows, length + 1), PAD, dtype=np.int64)
    for r in range(rows):
        piece = np.asarray(values[r * length : min((r + 1) * length + 1, n + 1)], dtype=np.int64)
        data[r, : len(piece)] = piece
    return data


def stream_blocks(tokens: np.ndarray, rows: int, block_len: int) -> list[LMBatch]:
    """Cut a token stream into `rows` contiguous streams (stream_rows) and those into blocks of block_len
    steps; past the end targets are PAD, so every token is predicted exactly once (none is dropped to make
    rows equal). Block i's targets are stream_rows(...)[:, 1:][:, i*block_len : (i+1)*block_len]."""
    data = stream_rows(tokens, rows)
    inputs = torch.from_numpy(data[:, :-1].copy())
    targets = torch.from_numpy(data[:, 1:].copy())
    targets[inputs == PAD] = PAD
    blocks = []
    for start in range(0, data.shape[1] - 1, block_len):
        y = targets[:, start : start + block_len]
        blocks.append(LMBatch(inputs[:, start : start + block_len], y, int((y != PAD).sum()), start == 0))
    return blocks
