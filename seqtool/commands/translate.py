"""`seqtool translate`: stream lines from stdin or a file through a trained run to stdout or a file."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from seqtool.commands.runs import load_run, pick_device
from seqtool.data.textio import decode_line, iter_lines, numbered_lines
from seqtool.decoding.translate import translate_lines
from seqtool.errors import SeqtoolError
from seqtool.util.files import atomic_open
from seqtool.util.oom import out_of_memory_hint


def read_source(path: Path | None) -> Iterator[str]:
    """Lines of a file or stdin as text; bad UTF-8 fails naming the line and byte."""
    if path is not None:
        return iter_lines(path, hint="")
    stdin = Path("<stdin>")
    return (decode_line(stdin, number, raw, "strict") for number, raw in numbered_lines(sys.stdin.buffer, stdin))


def run_translate(checkpoint: Path, source: Path | None, output: Path | None, overrides: dict, *,
                  device: str, seed: int, warn: Callable[[str], None]) -> None:
    run = load_run(checkpoint, overrides, pick_device(device))
    if run.recipe.task != "translation":
        raise SeqtoolError(f"{run.path}: a {run.recipe.task!r} run ({run.recipe.model.arch}); translate needs a "
                           "translation run")
    spec = run.recipe.decode
    generator = torch.Generator(device=next(run.model.parameters()).device).manual_seed(seed)  # for sampling
    translations = translate_lines(run.model, run.vocabs, read_source(source), spec,
                                   device=next(run.model.parameters()).device, warn=warn, generator=generator)
    sink = atomic_open(output) if output else contextlib.nullcontext(sys.stdout)
    with sink as out, out_of_memory_hint("translating", "decode.batch_tokens (--batch-tokens) or decode.beam (--beam)"):
        for number, translation in enumerate(translations):
            if spec.n_best == 1:
                out.write(translation.text + "\n")
            else:
                out.writelines(f"{number} ||| {text} ||| {score:.4f}\n" for text, score in translation.nbest)
            if output is None and number % 256 == 255:
                out.flush()
