"""The memorization probe over cells and hidden sizes (papers.md card 14): the largest delay recalled.

    python bench/memory_probe.py [--recipe recipes/cells/recall-probe.yaml] [--cells rnn gru lstm]
                                 [--hidden 8 32 128] [--set train.max_steps=1500]

Trains the recall recipe once per (cell, hidden size) in a temporary directory and prints, per run, the
test accuracy at each delay and max_delay (the largest delay with >= 90% accuracy), then one JSON line.
The information bound for comparison: H units of float state hold far more than the k * 3 bits a delay
of k needs, so any limit found is the training's, not the capacity's (the card's expectation).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.commands.train import train_recipe  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/cells/recall-probe.yaml")
    parser.add_argument("--cells", nargs="+", default=["rnn", "gru", "lstm"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[8, 32, 128])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells:
            for hidden in args.hidden:
                overrides = [*args.overrides, f"model.cell={cell}", f"model.hidden_dim={hidden}",
                             f"output_dir={tmp}/{cell}-{hidden}", "log.progress=none"]
                started = time.perf_counter()
                result = train_recipe(load_recipe(args.recipe, overrides))
                delays = {k: v for k, v in result.items() if k.startswith("accuracy_k")}
                rows.append({"cell": cell, "hidden": hidden, "max_delay": int(result["max_delay"]),
                             "seconds": round(time.perf_counter() - started, 1), **delays})
                print(f"{cell:>5} H={hidden:<4} max_delay {rows[-1]['max_delay']:>3}  "
                      + " ".join(f"{k[len('accuracy_'):]}={v:.2f}" for k, v in delays.items()), file=sys.stderr)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
