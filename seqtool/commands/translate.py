"""`seqtool translate`: stream lines from stdin or a file through a trained run to stdout or a file.

Input that is not a regular file (a terminal, pipe or FIFO) may be typed or written by a program that
waits for each answer: it is decoded as it arrives and every output line is flushed at once. A file
goes through the chunked path (4,096 lines a chunk), which batches best."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from seqtool.commands.runs import load_translation_run
from seqtool.data.textio import decode_line, iter_lines, numbered_lines
from seqtool.decoding.translate import translate_lines
from seqtool.util.files import atomic_open
from seqtool.util.oom import out_of_memory_hint


def read_source(path: Path | None) -> Iterator[str]:
    """Lines of a file or stdin as text; bad UTF-8 fails naming the line and byte."""
    if path is not None:
        return iter_lines(path, hint="")
    stdin = Path("<stdin>")
    return (decode_line(stdin, number, raw, "strict") for number, raw in numbered_lines(sys.stdin.buffer, stdin))


def is_stream(path: Path | None) -> bool:
    """Whether the input (a path, or stdin for None) is anything but a regular file."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode if path is None else path.stat().st_mode
    except (OSError, ValueError):  # a missing file fails when read; stdin replaced by a test has no descriptor
        return False
    return not stat.S_ISREG(mode)


def run_translate(checkpoint: Path, source: Path | None, output: Path | None, overrides: dict, *,
                  device: str, seed: int, warn: Callable[[str], None]) -> None:
    run = load_translation_run(checkpoint, overrides, device, "translate")
    spec = run.recipe.decode
    streaming = output is None and is_stream(source)  # an output file appears only at the end anyway
    generator = torch.Generator(device=next(run.model.parameters()).device).manual_seed(seed)  # for sampling
    translations = translate_lines(run.model, run.vocabs, read_source(source), spec,
                                   device=next(run.model.parameters()).device, warn=warn, generator=generator,
                                   streaming=streaming)
    sink = atomic_open(output) if output else contextlib.nullcontext(sys.stdout)
    with sink as out, out_of_memory_hint("translating", "decode.batch_tokens (--batch-tokens) or decode.beam (--beam)"):
        for number, translation in enumerate(translations):
            if spec.n_best == 1:
                out.write(translation.text + "\n")
            else:
                out.writelines(f"{number} ||| {text} ||| {score:.4f}\n" for text, score in translation.nbest)
            if streaming or (output is None and number % 256 == 255):
                out.flush()
