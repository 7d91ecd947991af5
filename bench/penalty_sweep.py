"""GNMT decoding study of a trained run: test BLEU for length penalty alpha x coverage penalty beta
(beam 5), and for beam 1/5/10 at the recipe's penalties, each with its decoding speed.

    python bench/penalty_sweep.py runs/gnmt-multi30k [--batch 64] [--prune-margin 3.0]

As Wu et al. 2016, Table 2 (alpha in {0, 0.2, 0.6, 1.0} x beta in {0, 0.2}). BLEU is sacrebleu on
detokenized, cased text (what `seqtool eval` reports). Prints a Markdown table on stdout, then one
JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from decode import measure  # noqa: E402

from seqtool.commands.runs import load_run  # noqa: E402
from seqtool.data.prepare import prepared_dir  # noqa: E402

ALPHAS = (0.0, 0.2, 0.6, 1.0)
BETAS = (0.0, 0.2)
BEAMS = (1, 5, 10)


def sweep(run, sources, refs, *, batch: int, changes: dict) -> list[dict]:
    """One row per setting: beam 5 over the alpha x beta grid, then beams 1/5/10 at the recipe's penalties."""
    spec = run.recipe.decode
    settings = [dict(beam=5, alpha=a, beta=b) for a in ALPHAS for b in BETAS]
    settings += [dict(beam=k, alpha=spec.alpha, beta=spec.beta) for k in BEAMS]
    rows = []
    for values in settings:
        search = spec.model_copy(update={"n_best": 1, **changes, **values})
        result = measure(run.model, sources, run.vocabs, refs, search, batch, torch.device("cpu"))
        rows.append({**values, **{k: result[k] for k in ("bleu", "sentences_per_s", "tokens_per_s")}})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def markdown(rows: list[dict]) -> str:
    grid = {(r["alpha"], r["beta"]): r for r in rows[: len(ALPHAS) * len(BETAS)]}
    lines = ["| beam 5 | " + " | ".join(f"beta={b}" for b in BETAS) + " |", "| --- |" + " --- |" * len(BETAS)]
    for a in ALPHAS:
        cells = [f"{grid[a, b]['bleu']:.2f} ({grid[a, b]['sentences_per_s']:.0f} sent/s)" for b in BETAS]
        lines.append(f"| alpha={a} | " + " | ".join(cells) + " |")
    lines += ["", "| beam | alpha | beta | BLEU | sentences/s | target tokens/s |", "|" + " --- |" * 6]
    for r in rows[len(ALPHAS) * len(BETAS):]:
        lines.append(f"| {r['beam']} | {r['alpha']} | {r['beta']} | {r['bleu']:.2f} | {r['sentences_per_s']:.0f} | "
                     f"{r['tokens_per_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--batch", type=int, default=64, help="sentences per decoding batch")
    parser.add_argument("--prune-margin", type=float, help="GNMT pruning margin (default: the recipe's)")
    parser.add_argument("--limit", type=int, help="only the first N test sentences")
    args = parser.parse_args()
    run = load_run(args.run)
    refs_dir = prepared_dir(run.recipe) / "refs"
    src_lines = (refs_dir / "test.src").read_text(encoding="utf-8").splitlines()[: args.limit]
    refs = (refs_dir / "test.tgt").read_text(encoding="utf-8").splitlines()[: args.limit]
    sources = [np.asarray(ids, dtype=np.int64) for ids in run.vocabs.src.encode(src_lines)]
    changes = {} if args.prune_margin is None else {"prune_margin": args.prune_margin}
    with torch.inference_mode():
        rows = sweep(run, sources, refs, batch=args.batch, changes=changes)
    print(markdown(rows))
    margin = changes.get("prune_margin", run.recipe.decode.prune_margin)
    print(json.dumps({"run": args.run, "sentences": len(sources), "batch": args.batch,
                      "threads": torch.get_num_threads(), "prune_margin": margin, "rows": rows}))


if __name__ == "__main__":
    main()
