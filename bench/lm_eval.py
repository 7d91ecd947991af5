"""Language-model scoring speed of trained runs: tokens/s of `eval` over a split, and its perplexity.

    python bench/lm_eval.py runs/gcnn-ptb runs/lstm-ptb [--split test] [--repeats 3]

Each run is scored exactly as `seqtool eval` scores it (the lm task's contiguous blocks with the
state carried between them, `eval.lm_streams` streams of `data.block_len` tokens), once untimed to
warm up and then `--repeats` times; the best time counts. One JSON line per run on stderr, and a
final JSON line with all runs on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.runs import count_parameters, load_run  # noqa: E402
from seqtool.commands.tasks import open_task  # noqa: E402
from seqtool.data.prepare import prepared_dir  # noqa: E402


def measure(target: str, split: str, repeats: int) -> dict:
    run = load_run(target)
    task = open_task(run.recipe, torch.device("cpu"), directory=prepared_dir(run.recipe))
    metrics = task.evaluate(run.model, split)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        task.evaluate(run.model, split)
        times.append(time.perf_counter() - start)
    best = min(times)
    return {"run": target, "arch": run.recipe.model.arch, "parameters": count_parameters(run.model),
            "step": run.payload["trainer"]["step"], "split": split, "ppl": metrics["ppl"],
            "tokens": metrics["tokens"], "seconds": best, "tokens_per_s": metrics["tokens"] / best,
            "us_per_token": 1e6 * best / metrics["tokens"], "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for target in args.runs:
        rows.append(measure(target, args.split, args.repeats))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"split": args.split, "rows": rows}))


if __name__ == "__main__":
    main()
