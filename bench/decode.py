"""Decoding throughput of a trained run: sentences/s and target tokens/s for beam sizes x batch sizes.

    python bench/decode.py runs/lstm-attn-multi30k --beams 1,5 --batches 16,64,128 [--reference]

Sources are the run's raw test split (or --src/--ref files), tokenized once outside the timing.
--reference also decodes with a straightforward per-sentence beam search (one hypothesis at a time,
a Python loop over hypotheses) over the same model and reports the speed ratio and whether every
output is identical to the batched search (in the precision of the fastest row of the widest beam).
--precisions fp32,bf16 repeats every setting under each autocast dtype (decode.precision); int8 decodes
the run's int8 conversion (seqtool/decoding/int8.py). Each row also gives the process's CPU seconds
(sentences_per_cpu_s): with one thread, a speed that other jobs on a shared machine barely move.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.runs import load_run  # noqa: E402
from seqtool.data.batching import pad_rows  # noqa: E402
from seqtool.data.prepare import prepared_dir  # noqa: E402
from seqtool.decoding.penalties import gnmt_score, length_penalty  # noqa: E402
from seqtool.decoding.search import Hypothesis, output_limits  # noqa: E402
from seqtool.decoding.translate import translate_ids  # noqa: E402
from seqtool.evaluation.metrics import corpus_metrics  # noqa: E402
from seqtool.recipe.schema import DecodeSpec  # noqa: E402
from seqtool.specials import BOS, EOS, PAD  # noqa: E402
from seqtool.util.precision import autocast, compute_dtype  # noqa: E402


def reference_search(model, source: np.ndarray, settings: DecodeSpec) -> Hypothesis:
    """Beam search for one sentence, one hypothesis at a time, with the batched search's rules
    (GNMT pruning included when settings.prune_margin is set)."""
    K, margin = settings.beam, settings.prune_margin
    src = pad_rows([source], suffix=EOS)
    mask = src != PAD
    enc = model.encode(src, mask)
    max_len = int(output_limits(mask, settings)[0])
    live = [(torch.tensor(0.0), [], model.start(enc), torch.zeros(src.size(1)))]  # (log P, tokens, state, coverage)
    finished: list[Hypothesis] = []
    for step in range(max_len):
        candidates = []
        for logp, tokens, state, attn in live:
            out = model.step(torch.tensor([tokens[-1] if tokens else BOS]), state, enc)
            lp = out.log_probs[0].float().clone()
            lp[PAD] = lp[BOS] = float("-inf")
            if step + 1 >= max_len:
                lp[torch.arange(lp.numel()) != EOS] = float("-inf")
            if margin is not None:  # GNMT rule 1: tokens within the margin of this hypothesis's best
                lp[lp < lp.max() - margin] = float("-inf")
            covered = attn + out.attn[0].float() if out.attn is not None else attn
            top = lp.topk(min(2 * K, lp.numel()))
            candidates += [(logp + v, tokens + [t], out.state, covered)
                           for v, t in zip(top.values, top.indices.tolist())]
        candidates = sorted(candidates, key=lambda c: -float(c[0]))[: 2 * K]
        for logp, tokens, _, attn in candidates[:K]:
            if tokens[-1] == EOS and logp > float("-inf"):
                score = _score(logp, len(tokens), attn, mask, settings)
                finished.append(Hypothesis(tokens[:-1], score, float(logp)))
        finished = sorted(finished, key=lambda h: -h.score)[:K]
        live = [c for c in candidates if c[1][-1] != EOS and c[0] > float("-inf")][:K]
        if margin is not None and finished:  # GNMT rule 2: drop live ones far below the best finished
            live = [c for c in live if _score(c[0], step + 1, c[3], mask, settings) >= finished[0].score - margin]
        if not live or step + 1 >= max_len:
            break
        bound = max(float(c[0]) for c in live) / float(length_penalty(torch.tensor(max_len), settings.alpha,
                                                                     settings.length_penalty))
        if finished and finished[0].score >= bound:
            break
    return finished[0]


def _score(logp: torch.Tensor, length: int, attn: torch.Tensor, mask: torch.Tensor, settings: DecodeSpec):
    return float(gnmt_score(logp.view(1), torch.tensor([length]), attn[None], mask, alpha=settings.alpha,
                            beta=settings.beta, kind=settings.length_penalty))


def measure(model, sources, vocabs, refs, settings, batch: int, device) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    hyps = translate_ids(model, sources, settings, batch_tokens=10**9, batch_sentences=batch, device=device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    texts = [vocabs.tgt.decode(h[0].tokens) for h in hyps]
    tokens = sum(len(h[0].tokens) + 1 for h in hyps)
    return {"beam": settings.beam, "batch": batch, "precision": settings.precision,
            "dtype": str(compute_dtype(settings.precision, torch.device(device))).removeprefix("torch."),
            "sentences_per_s": len(sources) / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
            "cpu_seconds": cpu_seconds, "sentences_per_cpu_s": len(sources) / cpu_seconds,
            "bleu": corpus_metrics(texts, refs, ["bleu"])["bleu"].score, "_tokens": [h[0].tokens for h in hyps]}


@contextlib.contextmanager
def profiled(enabled: bool):
    """torch.profiler around the block, its top operators (by self CPU time) printed to stderr."""
    if not enabled:
        yield
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        yield
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--batches", default="16,64,128")
    parser.add_argument("--src", help="source file (default: the run's test split)")
    parser.add_argument("--ref", help="reference file for BLEU")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--alpha", type=float)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--prune-margin", type=float, help="GNMT pruning margin (default: the recipe's)")
    parser.add_argument("--precisions", help="e.g. fp32,bf16 (default: the recipe's decode.precision)")
    parser.add_argument("--reference", action="store_true", help="also run the per-sentence beam search")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of each setting")
    args = parser.parse_args()
    run = load_run(args.run)
    data = prepared_dir(run.recipe) / "refs"
    src_lines = Path(args.src or data / "test.src").read_text(encoding="utf-8").splitlines()[: args.limit]
    refs = Path(args.ref or data / "test.tgt").read_text(encoding="utf-8").splitlines()[: args.limit]
    sources = [np.asarray(ids, dtype=np.int64) for ids in run.vocabs.src.encode(src_lines)]
    penalties = {k: v for k, v in (("alpha", args.alpha), ("beta", args.beta), ("prune_margin", args.prune_margin))
                 if v is not None}
    precisions = args.precisions.split(",") if args.precisions else [run.recipe.decode.precision]
    models = {p: load_run(args.run, {"decode": {"precision": "int8"}}).model if p == "int8" else run.model
              for p in precisions}  # int8 is a converted model, not an autocast dtype
    rows = []
    with torch.inference_mode():
        for precision, beam in ((p, int(b)) for p in precisions for b in args.beams.split(",")):
            settings = run.recipe.decode.model_copy(update={"beam": beam, "n_best": 1, "precision": precision,
                                                                 **penalties})
            for batch in map(int, args.batches.split(",")):
                with profiled(args.profile):
                    rows.append(measure(models[precision], sources, run.vocabs, refs, settings, batch,
                                        torch.device("cpu")))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "_tokens"}), file=sys.stderr)
        result = {"run": args.run, "sentences": len(sources), "threads": torch.get_num_threads(),
                  "rows": [{k: v for k, v in r.items() if k != "_tokens"} for r in rows]}
        if args.reference:
            result["reference"] = compare_reference(models, sources, rows, run.recipe.decode, penalties)
    print(json.dumps(result))


def compare_reference(models, sources, rows, spec, penalties) -> dict:
    """The per-sentence search against the batched rows of the largest beam."""
    beam = max(r["beam"] for r in rows)
    best = max((r for r in rows if r["beam"] == beam), key=lambda r: r["sentences_per_s"])
    settings = spec.model_copy(update={"beam": beam, "n_best": 1, "precision": best["precision"], **penalties})
    start = time.perf_counter()
    with autocast(settings.precision, torch.device("cpu")):
        outputs = [reference_search(models[settings.precision], s, settings).tokens for s in sources]
    seconds = time.perf_counter() - start
    return {"beam": beam, "precision": best["precision"], "sentences_per_s": len(sources) / seconds,
            "batched_sentences_per_s": best["sentences_per_s"],
            "speedup": best["sentences_per_s"] * seconds / len(sources),
            "identical": sum(a == b for a, b in zip(outputs, best["_tokens"])), "of": len(sources)}


if __name__ == "__main__":
    main()
