"""Speed of the recurrent cells' time loop against torch's fused LSTM (forward + backward of one layer).

    python bench/cells.py [--batch 64] [--steps 120] [--hidden 64] [--input 10] [--repeats 5]

For each variant it prints the milliseconds per forward + backward pass over a (batch, steps, input)
sequence and the ratio to the fused nn.LSTM, then one JSON line. Variants: torch's fused LSTM; the same
LSTM equations in seqtool's Python time loop (cell {name: lstm, fused: false}); the loop with layer
norm and with ATN; the NC-GRU and peephole LSTM; and a loop compiled per step with torch.compile, to
show why seqtool does not compile it (the per-call overhead exceeds the fused kernels it buys).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.models.recurrent.layers import Recurrent  # noqa: E402

VARIANTS = {
    "fused lstm": ("lstm", "none"),
    "loop lstm": ({"name": "lstm", "fused": False}, "none"),
    "loop lstm + layer norm": ("lstm", "layer"),
    "loop lstm + atn (k=25)": ("lstm", {"name": "atn", "window": 25}),
    "loop lstm + recurrent_batch": ("lstm", "recurrent_batch"),
    "loop lstm_peephole": ("lstm_peephole", "none"),
    "loop ncgru": ("ncgru", "none"),
}


def time_pass(rnn: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Milliseconds per forward + backward pass (after two warm-up passes)."""
    for _ in range(2):
        rnn(x)[0].sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        rnn(x)[0].sum().backward()
    return 1000 * (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--input", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled-step variant")
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.batch, args.steps, args.input)
    results = {}
    for name, (cell, norm) in VARIANTS.items():
        results[name] = time_pass(Recurrent(cell, args.input, args.hidden, norm=norm), x, args.repeats)
    if not args.no_compile:
        rnn = Recurrent({"name": "lstm", "fused": False}, args.input, args.hidden)
        rnn.layers[0].step = torch.compile(rnn.layers[0].step, dynamic=True)
        results["loop lstm, each step torch.compile'd"] = time_pass(rnn, x, args.repeats)
    base = results["fused lstm"]
    for name, ms in results.items():
        print(f"{name:<40} {ms:8.1f} ms  x{ms / base:5.1f}", file=sys.stderr)
    print(json.dumps({"batch": args.batch, "steps": args.steps, "hidden": args.hidden,
                      "threads": torch.get_num_threads(),
                      "ms": {k: round(v, 1) for k, v in results.items()}}))


if __name__ == "__main__":
    main()
