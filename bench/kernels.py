"""The three changes that sped up CPU training, each timed against what it replaced, in one run.

    python bench/kernels.py [--tokens 3850 --vocab 8000 --dim 256 --hidden 256]

1. output layer: fused chunked linear + label-smoothed cross-entropy vs nn.Linear + F.cross_entropy
2. dropout: byte masks vs torch's dropout
3. bidirectional encoder: reversal within lengths (fused kernels) vs packed sequences
Shapes default to a Multi30k batch of ~3,850 target tokens (214 sentences x 18 positions).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.models.layers import Dropout  # noqa: E402
from seqtool.models.losses import output_loss  # noqa: E402
from seqtool.models.recurrent.layers import BiRecurrent  # noqa: E402


def timed(fn, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def output_layer(tokens: int, dim: int, vocab: int) -> dict:
    out = nn.Linear(dim, vocab)
    h = torch.randn(tokens, dim, requires_grad=True)
    y = torch.randint(4, vocab, (tokens,))

    def reference():
        nn.functional.cross_entropy(out(h), y, label_smoothing=0.1, reduction="sum").backward()

    def fused():
        output_loss(h, y, out, 0.1)[0].backward()

    return {"reference_ms": 1000 * timed(reference), "seqtool_ms": 1000 * timed(fused)}


def dropout(shape: tuple) -> dict:
    x = torch.randn(*shape, requires_grad=True)
    ours = Dropout(0.3).train()
    return {"reference_ms": 1000 * timed(lambda: nn.functional.dropout(x, 0.3, True).sum().backward()),
            "seqtool_ms": 1000 * timed(lambda: ours(x).sum().backward())}


def encoder(batch: int, length: int, dim: int, hidden: int) -> dict:
    x = torch.randn(batch, length, dim, requires_grad=True)
    lengths = torch.randint(length // 2, length + 1, (batch,))
    lengths[0] = length
    packed_lstm = nn.LSTM(dim, hidden // 2, batch_first=True, bidirectional=True)
    ours = BiRecurrent("lstm", dim, hidden // 2)

    def packed():
        seq = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        pad_packed_sequence(packed_lstm(seq)[0], batch_first=True)[0].sum().backward()

    def seqtool():
        ours(x, lengths)[0].sum().backward()

    return {"reference_ms": 1000 * timed(packed), "seqtool_ms": 1000 * timed(seqtool)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=3850)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = {"output_layer": output_layer(args.tokens, args.dim, args.vocab),
            "dropout": dropout((args.tokens, 2 * args.hidden)),
            "bidirectional_encoder": encoder(214, 23, args.dim, args.hidden)}
    for row in rows.values():
        row["speedup"] = row["reference_ms"] / row["seqtool_ms"]
    print(json.dumps({"threads": torch.get_num_threads(), **rows}))


if __name__ == "__main__":
    main()
