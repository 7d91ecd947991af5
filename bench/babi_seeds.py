"""The paper's protocol for bAbI (Sukhbaatar et al. 2015, sec. 4.2: "repeated each training 10 times with
different random initializations"): train one recipe with several seeds and keep the run with the best
validation accuracy. Prints every seed's validation and test figures, their spread, and the kept run's
per-task test table.

    python bench/babi_seeds.py recipes/memn2n-babi-1k.yaml --seeds 10 [--jobs 2] [--set KEY=VALUE ...]

Each seed is an ordinary run (`seqtool train RECIPE --set seed=K`, one thread) in RUNS/NAME-seedK, `--jobs`
at a time, all sharing one prepared data directory. The choice reads only the validation split (the
authors kept the lowest training error; the held-out split is the safer reading); the test figures of the
other seeds are shown so the spread is visible. Prints Markdown, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.tasks.qa import QATask  # noqa: E402


def train_seed(recipe: str, seed: int, out: Path, data: Path, overrides: list[str]) -> dict:
    """Train one seed; its best validation accuracy (the choice) and the test result the run printed."""
    sets = [f"seed={seed}", f"output_dir={out}", f"data.prepared_dir={data}", "train.threads=1", *overrides]
    command = [sys.executable, "-m", "seqtool", "train", recipe, *(x for s in sets for x in ("--set", s))]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if done.returncode:
        raise SystemExit(f"seed {seed} failed:\n{done.stderr[-2000:]}")
    test = json.loads(done.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = max((r for r in rows if r["split"] == "valid"), key=lambda r: r["accuracy"])
    print(f"seed {seed}: valid accuracy {valid['accuracy']:.4f}, test mean error {test['mean_error']:.2f}",
          file=sys.stderr)
    return {"seed": seed, "valid_accuracy": valid["accuracy"], "valid_mean_error": valid["mean_error"],
            "test": test}


def markdown(results: list[dict], kept: dict) -> str:
    lines = ["| seed | valid accuracy | valid mean error | test mean error | failed tasks |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        mark = " (kept)" if r is kept else ""
        lines.append(f"| {r['seed']}{mark} | {r['valid_accuracy']:.4f} | {r['valid_mean_error']:.2f} | "
                     f"{r['test']['mean_error']:.2f} | {int(r['test']['failed_tasks'])} |")
    errors = [r["test"]["mean_error"] for r in results]
    spread = f"{statistics.mean(errors):.2f}" + (f" ± {statistics.stdev(errors):.2f}" if len(errors) > 1 else "")
    lines += ["", f"test mean error over seeds: {spread}; kept by validation: seed {kept['seed']}, "
              f"{kept['test']['mean_error']:.2f}", "", "```", QATask.format_result(kept["test"]), "```"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 1..N")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--runs", default="runs", help="folder for the seeds' run directories")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    recipe = load_recipe(args.recipe, args.overrides)
    base = Path(args.runs) / f"{recipe.name}-seed"
    data = Path(args.runs) / f"{recipe.name}-seeds-data"
    QATask.prepare(recipe.model_copy(update={"data": recipe.data.model_copy(update={"prepared_dir": str(data)})}),
                   log=lambda m: print(m, file=sys.stderr))
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda k: train_seed(args.recipe, k, Path(f"{base}{k}"), data, args.overrides),
                                range(1, args.seeds + 1)))
    kept = max(results, key=lambda r: r["valid_accuracy"])
    print(markdown(results, kept))
    print(json.dumps({"recipe": args.recipe, "kept_seed": kept["seed"], "seeds": results}))


if __name__ == "__main__":
    main()
