"""S5's parallel scan against torch's LSTM kernel: tokens/s of one layer at long sequence lengths.

    python bench/s5_scan.py [--lengths 1000,4000,16000] [--batch 4] [--d-model 64] [--state-dim 64]
                            [--repeats 3] [--scans] [--threads 1]

Per length it times one S5 layer (seqtool/models/state_space/s5.py: the SSM by parallel scan, GELU, the
gate, layer norm) and an nn.LSTM with as many parameters (hidden size chosen to match, input d_model),
both forward only (inference mode) and forward + backward, and prints tokens/s (batch x length / time)
and the S5 / LSTM ratio. `--scans` also times the recurrence x_k = a x_{k-1} + b_k alone (forward +
backward, complex64, width P/2) three ways: seqtool's odd/even recursive scan, the Hillis-Steele
doubling scan (O(T log T) work) and the Python loop over time (up to 4k steps). One final JSON line.
Speeds depend on the machine and on what else runs there: compare figures within one run only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.models.state_space.s5 import S5Layer, S5SequenceConfig  # noqa: E402
from seqtool.models.state_space.scan import linear_scan  # noqa: E402

LOOP_LIMIT = 4000  # the Python loop's backward pass grows too slow to wait for beyond this


def doubling_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hillis-Steele: after the pass with offset d every x_k holds the sum over its last 2d inputs."""
    x, power, offset = b, a, 1
    while offset < b.size(-2):
        x = torch.cat([x[..., :offset, :], x[..., offset:, :] + power * x[..., :-offset, :]], -2)
        power, offset = power * power, 2 * offset
    return x


def loop_scan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    x, states = torch.zeros_like(b[..., 0, :]), []
    for k in range(b.size(-2)):
        x = a * x + b[..., k, :]
        states.append(x)
    return torch.stack(states, -2)


def lstm_hidden_for(params: int, d_model: int) -> int:
    """The LSTM hidden size whose parameter count (4h(d + h) + 8h) is nearest `params`."""
    return min(range(1, 4 * d_model), key=lambda h: abs(4 * h * (d_model + h) + 8 * h - params))


def seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def layer_speeds(layer, x: torch.Tensor, repeats: int) -> dict[str, float]:
    def forward():
        with torch.inference_mode():
            layer(x)

    def train():
        layer(x)[0].float().sum().backward()

    tokens = x.size(0) * x.size(1)
    return {"forward": tokens / seconds(forward, repeats), "train": tokens / seconds(train, repeats)}


def scan_speeds(length: int, batch: int, width: int, repeats: int) -> dict[str, float]:
    a = torch.exp(torch.complex(-0.5 * torch.rand(width) * 0.01, torch.randn(width)))
    b = torch.randn(batch, length, width, dtype=torch.complex64, requires_grad=True)
    scans = {"recursive": lambda: linear_scan(a, b), "doubling": lambda: doubling_scan(a, b)}
    if length <= LOOP_LIMIT:
        scans["loop"] = lambda: loop_scan(a, b)
    return {name: batch * length / seconds(lambda f=f: f().abs().sum().backward(), repeats)
            for name, f in scans.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1000,4000,16000")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--state-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scans", action="store_true", help="also compare scan algorithms")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    s5 = S5Layer(S5SequenceConfig(d_model=args.d_model, state_dim=args.state_dim))
    params = sum(p.numel() for p in s5.parameters())
    hidden = lstm_hidden_for(params, args.d_model)
    lstm = torch.nn.LSTM(args.d_model, hidden, batch_first=True)
    report = {"s5_parameters": params, "lstm_hidden": hidden,
              "lstm_parameters": sum(p.numel() for p in lstm.parameters()), "batch": args.batch,
              "threads": args.threads, "lengths": {}}
    print(f"S5 layer H={args.d_model} P={args.state_dim}: {params:,} parameters; LSTM hidden {hidden}: "
          f"{report['lstm_parameters']:,}", file=sys.stderr)
    for length in (int(v) for v in args.lengths.split(",")):
        x = torch.randn(args.batch, length, args.d_model)
        row = {"s5": layer_speeds(s5, x, args.repeats), "lstm": layer_speeds(lstm, x, args.repeats)}
        row["s5_over_lstm"] = {k: row["s5"][k] / row["lstm"][k] for k in row["s5"]}
        if args.scans:
            row["scans"] = scan_speeds(length, args.batch, args.state_dim // 2, args.repeats)
        report["lengths"][length] = row
        print(f"T={length}: tokens/s forward S5 {row['s5']['forward']:,.0f} LSTM {row['lstm']['forward']:,.0f}; "
              f"forward+backward S5 {row['s5']['train']:,.0f} LSTM {row['lstm']['train']:,.0f}"
              + (f"; scans {', '.join(f'{k} {v:,.0f}' for k, v in row['scans'].items())}" if args.scans else ""),
              file=sys.stderr)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
