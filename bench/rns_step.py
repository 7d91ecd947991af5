"""Time per training step of the RNS-RNN (all runs, and limited to a window D) against an LSTM with as many
parameters, at a few string lengths: forward + backward of the model and its output layer on a batch of
one-hot strings (the marked-reversal recipe's sizes: 4 input symbols, Q = 2, S = 3, 20 controller units; the
LSTM has 30 units).

    OMP_NUM_THREADS=1 python bench/rns_step.py [--lengths 16,32,64,128] [--batch 10] [--windows 8,16]
                                              [--repeats 3] [--longest-full 64]

Prints milliseconds of CPU time per step (process time, steadier than wall time on a shared machine) and the
ratio to the LSTM, then one JSON line. The full RNS-RNN grows as n^3 and is skipped beyond --longest-full;
the limited one grows as n D^2.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.models.base import VocabSizes  # noqa: E402
from seqtool.models.recurrent.rns import RNSRNN, RNSRNNConfig  # noqa: E402
from seqtool.models.recurrent.sequence import RNNSequence, RNNSequenceConfig  # noqa: E402

SIZES = VocabSizes(4, 4)


def step_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """CPU milliseconds per forward + backward (after one warm-up pass)."""
    model.out(model(x)).sum().backward()
    start = time.process_time()
    for _ in range(repeats):
        model.out(model(x)).sum().backward()
    return 1000 * (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="16,32,64,128")
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--windows", default="8,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--longest-full", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {"lstm (30 units)": RNNSequence(RNNSequenceConfig(cell="lstm", hidden_dim=30), SIZES),
              "rns-rnn (all runs)": RNSRNN(RNSRNNConfig(), SIZES)}
    models.update({f"rns-rnn (window {d})": RNSRNN(RNSRNNConfig(window=int(d)), SIZES)
                   for d in args.windows.split(",")})
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in models.items()}
    rows = []
    for n in map(int, args.lengths.split(",")):
        x = torch.eye(SIZES.src)[torch.randint(0, SIZES.src, (args.batch, n))]
        base = None
        for name, model in models.items():
            if name == "rns-rnn (all runs)" and n > args.longest_full:
                continue
            ms = step_ms(model, x, args.repeats)
            base = base or ms
            rows.append({"length": n, "model": name, "params": params[name], "ms": round(ms, 1),
                         "vs_lstm": round(ms / base, 1)})
            print(f"n={n:4d}  {name:22s} {params[name]:6,d} params  {ms:9.1f} ms/step  {ms / base:7.1f}x lstm",
                  flush=True)
    print(json.dumps({"batch": args.batch, "threads": 1, "rows": rows}))


if __name__ == "__main__":
    main()
