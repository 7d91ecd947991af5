"""The cost of lexically constrained decoding (dynamic beam allocation) against unconstrained beam search.

    python bench/constraints.py RUN [--beam 5] [--batch 64] [--phrases 2] [--repeats 3] [--limit N]

Sources are the run's raw test split. Each sentence gets --phrases constraints of 1-2 words, taken
(seeded) from two places in turn: its own reference ("reference": what Post and Vilar 2018 simulate,
phrases a translator would ask for) and the reference of another sentence ("foreign": phrases the
model would not produce, which the search must force in). Each setting is decoded --repeats times,
plain and constrained alternately so that load on a shared machine hits both alike, and the fastest
run of each is kept. Reports sentences/s, the constrained / unconstrained time ratio, the share of
constraints found in the output (as whole words, in order) and BLEU.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from seqtool.commands.runs import load_run  # noqa: E402
from seqtool.data.prepare import prepared_dir  # noqa: E402
from seqtool.decoding.translate import Source, translate_lines  # noqa: E402
from seqtool.evaluation.metrics import corpus_metrics  # noqa: E402


def phrases_from(reference: str, count: int, rng: random.Random) -> list[str]:
    """Up to `count` non-overlapping spans of 1-2 words of a reference."""
    words, spans, taken = reference.split(), [], set()
    for _ in range(4 * count):
        if len(spans) == count or not words:
            break
        size = rng.choice((1, 2))
        start = rng.randrange(max(1, len(words) - size + 1))
        cover = set(range(start, min(start + size, len(words))))
        if not cover & taken:
            taken |= cover
            spans.append(" ".join(words[i] for i in sorted(cover)))
    return spans


def kept(output: str, phrases: list[str]) -> int:
    """How many of the phrases the output holds (a phrase asked for twice must appear twice)."""
    words, found = output.split(), 0
    for phrase in set(phrases):
        target = phrase.split()
        times = sum(words[i : i + len(target)] == target for i in range(len(words) - len(target) + 1))
        found += min(times, phrases.count(phrase))
    return found


def timed(run, items, settings) -> tuple[float, list[str]]:
    start = time.perf_counter()
    texts = [t.text for t in translate_lines(run.model, run.vocabs, items, settings, device=torch.device("cpu"))]
    return time.perf_counter() - start, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="sentences per decoding batch")
    parser.add_argument("--phrases", type=int, default=2, help="constraints per sentence")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    refs_dir = prepared_dir(run.recipe) / "refs"
    sources = (refs_dir / "test.src").read_text(encoding="utf-8").splitlines()[: args.limit]
    refs = (refs_dir / "test.tgt").read_text(encoding="utf-8").splitlines()[: args.limit]
    settings = run.recipe.decode.model_copy(update={"beam": args.beam, "n_best": 1, "batch_sentences": args.batch,
                                                     "batch_tokens": 10**6})
    rng = random.Random(args.seed)
    kinds = {"reference": [phrases_from(r, args.phrases, rng) for r in refs],
             "foreign": [phrases_from(refs[rng.randrange(len(refs))], args.phrases, rng) for _ in refs]}
    rows = []
    for kind, phrases in kinds.items():
        items = [Source(s, p) for s, p in zip(sources, phrases)]
        plain_s, constrained_s = float("inf"), float("inf")
        for _ in range(args.repeats):
            seconds, plain = timed(run, sources, settings)
            plain_s = min(plain_s, seconds)
            seconds, constrained = timed(run, items, settings)
            constrained_s = min(constrained_s, seconds)
        asked = sum(len(p) for p in phrases)
        rows.append({"constraints": kind, "asked": asked, "kept": sum(map(kept, constrained, phrases)),
                     "plain_sentences_per_s": round(len(sources) / plain_s, 1),
                     "constrained_sentences_per_s": round(len(sources) / constrained_s, 1),
                     "cost": round(constrained_s / plain_s, 2),
                     "bleu_plain": round(corpus_metrics(plain, refs, ["bleu"])["bleu"].score, 2),
                     "bleu_constrained": round(corpus_metrics(constrained, refs, ["bleu"])["bleu"].score, 2)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps({"run": args.run, "beam": args.beam, "batch": args.batch, "sentences": len(sources),
                      "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
