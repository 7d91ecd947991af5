"""The gating ablation of Dauphin et al. (2017, sec. 5.2, fig. 3) on word-level PTB: one recipe trained
with each gate (glu, gtu, relu, tanh) for the same wall-clock budget, then scored on the test split.

    SEQTOOL_DATA=../shared/data python bench/gcnn_gates.py [--recipe recipes/gcnn-ptb.yaml] [--minutes 5]

Runs go to --out/<gate> (default runs/gcnn-gates/<gate>) and share one prepared data directory;
an existing run directory is refused, as `seqtool train` refuses it. Prints a markdown table (the
one in README.md) and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.commands.runs import count_parameters, load_run  # noqa: E402
from seqtool.commands.train import train_recipe  # noqa: E402

GATES = ("glu", "gtu", "relu", "tanh")


def train_gate(recipe_path: str, gate: str, *, minutes: float, out: Path, extra: list[str]) -> dict:
    overrides = [f"model.gate={gate}", f"train.max_minutes={minutes}", "train.max_steps=null",
                 f"output_dir={out / gate}", f"data.prepared_dir={out / 'data'}", "log.progress=none", *extra]
    recipe = load_recipe(recipe_path, overrides)
    test = train_recipe(recipe)
    rows = [json.loads(line) for line in (out / gate / "metrics.jsonl").open(encoding="utf-8")]
    train = [r for r in rows if r["split"] == "train"]
    valid = [r["ppl"] for r in rows if r["split"] == "valid"]
    return {"gate": gate, "steps": max((r["step"] for r in rows), default=0), "valid_ppl": min(valid),
            "test_ppl": test["ppl"], "train_tokens_per_s": statistics.median(r["tokens_per_s"] for r in train),
            "parameters": count_parameters(load_run(out / gate).model)}


def table(rows: list[dict], minutes: float) -> str:
    lines = [f"| gate | parameters | steps in {minutes:g} min | train tokens/s | valid ppl | test ppl |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['gate']} | {r['parameters']:,} | {r['steps']:,} | {r['train_tokens_per_s']:,.0f} | "
              f"{r['valid_ppl']:.1f} | {r['test_ppl']:.1f} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/gcnn-ptb.yaml")
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per gate")
    parser.add_argument("--gates", default=",".join(GATES))
    parser.add_argument("--out", default="runs/gcnn-gates")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="more recipe overrides")
    args = parser.parse_args()
    rows = []
    for gate in args.gates.split(","):
        rows.append(train_gate(args.recipe, gate, minutes=args.minutes, out=Path(args.out), extra=args.overrides))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(table(rows, args.minutes))
    print(json.dumps({"recipe": args.recipe, "minutes": args.minutes, "rows": rows}))


if __name__ == "__main__":
    main()
