"""seqtool at the peers' settings (../shared/anchors/seqtool.sh): train, decode test2016, one JSON line.

    python bench/peer_settings.py --model fconv|lstm|transformer [--updates 500] [--threads 1] [--set KEY=VALUE ...]
        [--fairseq-lenpen] [--keep DIR | --run DIR]

Multi30k de-en from the raw text under SEQTOOL_DATA, a joint 8k unigram sentencepiece, about 2,000
padded tokens a batch, Adam 1e-3 constant with betas (0.9, 0.999), label smoothing 0.1, clip 1.0,
dropout 0.1, fp32, no validation nor checkpoint before the end: the overrides the anchors' script
passes (and fairseq's default betas, which it leaves to fairseq), so the figures
line up with fairseq's and the other peers'. Then the trained model decodes test2016 greedily and
with the recipe's beam (beam 5 in batches of 64 sentences, as the peers), each timed on its own.
Prints train target tokens/s (the median logged window, the first one dropped, as seqtool.sh), decode
sentences/s, BLEU and the hypothesis/reference length ratio (sacrebleu, 13a), steps and seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.commands.runs import load_run  # noqa: E402
from seqtool.commands.train import train_recipe  # noqa: E402
from seqtool.data.prepare import data_root  # noqa: E402
from seqtool.decoding.translate import translate_lines  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# the anchors' per-model flags (../shared/anchors/fairseq.sh): the Transformer alone has a schedule, fairseq's
# inverse-sqrt with 200 warm-up updates; fairseq's lstm has 256 units per encoder direction (a 512-wide
# memory), input feeding, separate source and target embeddings with the target's tied to the output layer,
# and starts the decoder from linear projections of the encoder's final h and c
RECIPES = {"fconv": ("convs2s-multi30k.yaml", []),
           "lstm": ("lstm-attn-multi30k.yaml", ["model.input_feeding=true", "model.encoder_hidden_dim=512",
                                                "model.share_embeddings=false", "model.tie_embeddings=true",
                                                "model.bridge=linear"]),
           "transformer": ("transformer-multi30k.yaml", ["train.schedule.name=inverse_sqrt",
                                                         "train.schedule.warmup_steps=200"])}


def peer_overrides(updates: int, threads: int) -> list[str]:
    """The settings ../shared/anchors/seqtool.sh passes (its COMMON array), in recipe-key form, and
    fairseq's default Adam betas, which fairseq.sh leaves to fairseq."""
    return [f"train.max_steps={updates}", "train.max_minutes=null", "train.batch_tokens=2000",
            "train.optimizer.lr=1e-3", "train.optimizer.betas=[0.9, 0.999]", "train.schedule.name=constant",
            "train.schedule.warmup_steps=0", "train.label_smoothing=0.1", "train.clip_norm=1.0", "model.dropout=0.1",
            "train.precision=fp32",
            "decode.precision=fp32", f"train.threads={threads}", "train.validate_every=100000",
            "train.checkpoint.every=100000", "log.progress=plain", "eval.valid_decode_limit=1",
            "data.tokenizer.vocab_size=8000", "decode.batch_sentences=64", "decode.batch_tokens=100000"]


def logged_rate(metrics: Path) -> int | None:
    """The median logged training window (the first dropped: start-up), None before the first log."""
    rates = [row["tokens_per_s"] for row in map(json.loads, metrics.read_text().splitlines())
             if row.get("split") == "train" and row.get("tokens_per_s")]
    return round(statistics.median(rates[1:] or rates)) if rates else None


def decode(run, sources: list[str], refs: list[str], beam: int, label: str = "", **changes) -> dict:
    """Decode test2016 with the run's decode settings at `beam` (and `changes`); speed, BLEU, length ratio."""
    from sacrebleu.metrics import BLEU

    spec = run.recipe.decode
    settings = spec.model_copy(update={"beam": beam, "n_best": 1, "strategy": "beam", **changes})
    start = time.perf_counter()
    hyps = [t.text for t in translate_lines(run.model, run.vocabs, sources, settings, device=torch.device("cpu"))]
    seconds = time.perf_counter() - start
    score = BLEU().corpus_score(hyps, [refs])
    key = f"beam{beam}{label}"
    return {f"{key}_sent_per_s": round(len(sources) / seconds, 1), f"{key}_bleu": round(score.score, 2),
            f"{key}_length_ratio": round(score.sys_len / score.ref_len, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="fconv")
    parser.add_argument("--updates", type=int, default=500)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--data-dir", help="reuse a prepared data directory")
    parser.add_argument("--keep", help="train into this new directory and keep it (default: a temporary one)")
    parser.add_argument("--run", help="decode this kept run (from --keep) instead of training a new one")
    parser.add_argument("--fairseq-lenpen", action="store_true",
                        help="also decode with the beam as fairseq.sh does: --lenpen 1, --max-len-a 1.2 "
                             "--max-len-b 10, and fairseq's stopping rule (decode.early_stop)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="further recipe overrides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name, arch = RECIPES[args.model]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or Path(tmp) / "run")
        overrides = [*peer_overrides(args.updates, args.threads), *arch, f"output_dir={out}", *args.overrides]
        if args.data_dir:
            overrides.append(f"data.prepared_dir={args.data_dir}")
        result = {"model": args.model, "threads": args.threads, "steps": args.updates}
        if args.run:
            out = Path(args.run)
        else:
            start = time.perf_counter()
            report = train_recipe(load_recipe(ROOT / "recipes" / name, overrides))
            result.update(train_s=round(time.perf_counter() - start, 1), seconds=report.get("seconds"))
        result["train_tok_per_s"] = logged_rate(out / "metrics.jsonl")
        corpus = data_root() / "multi30k"
        sources = (corpus / "test2016.de").read_text(encoding="utf-8").splitlines()
        refs = (corpus / "test2016.en").read_text(encoding="utf-8").splitlines()
        run = load_run(out)
        for beam in dict.fromkeys((1, args.beam)):
            result.update(decode(run, sources, refs, beam))
        if args.fairseq_lenpen:
            result.update(decode(run, sources, refs, args.beam, "_lenpen1", length_penalty="fairseq", alpha=1.0,
                                 max_len_a=1.2, max_len_b=10, early_stop=True))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
