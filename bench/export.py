"""Decoding speed of an exported model (onnxruntime, TorchScript) against seqtool's own PyTorch model,
on the same search, sources and settings: sentences/s, and whether every output is identical.

    python bench/export.py RUN [--src FILE] [--lines 500] [--beams 1,5] [--formats onnx,torchscript]

Sources default to the run's raw test split. Each format is exported into a temporary directory with
`seqtool export`'s code; the first batch is decoded once untimed (runtime warm-up). One thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.export import export_run, load_export  # noqa: E402
from seqtool.commands.runs import load_run  # noqa: E402
from seqtool.decoding.translate import translate_lines  # noqa: E402


def timed(model, vocabs, lines: list[str], spec) -> tuple[float, list[str]]:
    list(translate_lines(model, vocabs, lines[:16], spec, device=torch.device("cpu")))  # warm-up
    start = time.perf_counter()
    out = [t.text for t in translate_lines(model, vocabs, lines, spec, device=torch.device("cpu"))]
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--src", type=Path)
    parser.add_argument("--lines", type=int, default=500)
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--formats", default="onnx,torchscript")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = load_run(args.run)
    src = args.src or Path(run.recipe.output_dir) / "data" / "raw" / "test.src"
    lines = src.read_text(encoding="utf-8").splitlines()[: args.lines]
    with tempfile.TemporaryDirectory() as tmp:
        exports = {}
        for fmt in args.formats.split(","):
            start = time.perf_counter()
            export_run(args.run, fmt, Path(tmp) / fmt)
            exports[fmt] = load_export(Path(tmp) / fmt)
            print(f"export {fmt}: {time.perf_counter() - start:.1f} s", flush=True)
        print(f"{len(lines)} sentences of {src}, {run.recipe.model.arch}, one thread")
        print("| beam | runtime | sentences/s | vs PyTorch | identical outputs |\n|---|---|---|---|---|")
        for beam in map(int, args.beams.split(",")):
            spec = run.recipe.decode.model_copy(update={"beam": beam, "precision": "fp32"})
            seconds, ours = timed(run.model, run.vocabs, lines, spec)
            print(f"| {beam} | PyTorch (seqtool) | {len(lines) / seconds:.1f} | 1.00 | - |", flush=True)
            for fmt, loaded in exports.items():
                took, theirs = timed(loaded.model, loaded.vocabs, lines, spec)
                same = sum(a == b for a, b in zip(ours, theirs))
                print(f"| {beam} | {fmt} | {len(lines) / took:.1f} | {seconds / took:.2f} | {same}/{len(lines)} |",
                      flush=True)


if __name__ == "__main__":
    main()
