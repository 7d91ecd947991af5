"""Decoding speed of an exported model (onnxruntime, TorchScript, CTranslate2) against seqtool's own
PyTorch model, on the same sources and settings: sentences/s, whether every output is identical, and
BLEU with --ref.

    python bench/export.py RUN [--src FILE --ref FILE] [--lines 500] [--beams 1,5]
                           [--formats onnx,torchscript,ctranslate2] [--int8]

Sources default to the run's raw test split. Each format is exported into a temporary directory with
`seqtool export`'s code; the first batch is decoded once untimed (runtime warm-up). One thread.
onnx and torchscript decode through seqtool's search; ctranslate2 (a Transformer only) runs
CTranslate2's own search, once in float32 and once in int8 (its compute type), so its outputs differ
where its length penalty (length^alpha) differs from seqtool's; it decodes in one call under the
longest sentence's output limit (batches of 64 sentences). --int8 adds seqtool's int8 model.
Speeds are given per wall second and per CPU second of this process (one thread: the CPU figure is
the one other jobs on a shared machine barely move); the ratio is of CPU seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.export import CT2, export_run, load_ct2, load_export  # noqa: E402
from seqtool.commands.runs import load_run  # noqa: E402
from seqtool.decoding.translate import translate_lines  # noqa: E402
from seqtool.evaluation.metrics import corpus_metrics  # noqa: E402


def seqtool_search(model, vocabs):
    return lambda lines, spec: [t.text for t in translate_lines(model, vocabs, lines, spec, device=torch.device("cpu"))]


def timed(translate, lines: list[str], spec) -> tuple[float, float, list[str]]:
    """Wall and CPU seconds (this process, all its threads) of translating `lines`, and the outputs."""
    translate(lines[:16], spec)  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    out = translate(lines, spec)
    return time.perf_counter() - start, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--src", type=Path)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--formats", default="onnx,torchscript")
    parser.add_argument("--ref", type=Path, help="references of --src: adds a BLEU column")
    parser.add_argument("--int8", action="store_true", help="also seqtool's int8 model (decode.precision int8)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    src = args.src or Path(run.recipe.output_dir) / "data" / "raw" / "test.src"
    lines = src.read_text(encoding="utf-8").splitlines()[: args.lines]
    refs = args.ref.read_text(encoding="utf-8").splitlines()[: args.lines] if args.ref else None
    with tempfile.TemporaryDirectory() as tmp:
        runtimes = {"PyTorch (seqtool)": seqtool_search(run.model, run.vocabs)}
        if args.int8:
            runtimes["PyTorch int8 (seqtool)"] = seqtool_search(load_run(args.run, {"decode": {"precision": "int8"}})
                                                                .model, run.vocabs)
        for fmt in args.formats.split(","):
            start = time.perf_counter()
            export_run(args.run, fmt, Path(tmp) / fmt)
            if fmt == CT2:
                for compute in ("float32", "int8"):
                    ct2 = load_ct2(Path(tmp) / fmt, compute_type=compute)
                    runtimes[f"{CT2} {compute}"] = partial(ct2.translate, exact_limits=False)  # full batches
            else:
                loaded = load_export(Path(tmp) / fmt)
                runtimes[fmt] = seqtool_search(loaded.model, loaded.vocabs)
            print(f"export {fmt}: {time.perf_counter() - start:.1f} s", flush=True)
        print(f"{len(lines)} sentences of {src}, {run.recipe.model.arch}, one thread")
        print("| beam | runtime | sentences/s | sentences/CPU-s | vs PyTorch (CPU) | identical outputs | BLEU |\n"
              "|---|---|---|---|---|---|---|")
        for beam in map(int, args.beams.split(",")):
            spec = run.recipe.decode.model_copy(update={"beam": beam, "precision": "fp32"})
            base, ours = None, None
            for name, translate in runtimes.items():
                took, cpu, theirs = timed(translate, lines, spec)
                base, ours = base or cpu, ours or theirs
                same = sum(a == b for a, b in zip(ours, theirs))
                bleu = f"{corpus_metrics(theirs, refs, ['bleu'])['bleu'].score:.2f}" if refs else "-"
                print(f"| {beam} | {name} | {len(lines) / took:.1f} | {len(lines) / cpu:.1f} | {base / cpu:.2f} | "
                      f"{same}/{len(lines)} | {bleu} |", flush=True)

if __name__ == "__main__":
    main()
