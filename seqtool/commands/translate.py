"""`seqtool translate`: stream lines from stdin or a file through a trained run (or an ensemble of
runs, or a run fused with a language model) to stdout or a file.

Input that is not a regular file (a terminal, pipe or FIFO) may be typed or written by a program that
waits for each answer: it is decoded as it arrives and every output line is flushed at once. A file
goes through the chunked path (4,096 lines a chunk), which batches best."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

from seqtool.commands.combine import load_translator
from seqtool.data.textio import decode_line, iter_lines, numbered_lines
from seqtool.decoding.alignment import pharaoh
from seqtool.decoding.translate import Source, Translation, translate_lines
from seqtool.errors import SeqtoolError, first_line, located
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


def read_jsonl(lines: Iterable[str], name: str) -> Iterator[Source]:
    """JSON-lines input: {"text": "...", "constraints": ["phrase", ...]} per line (constraints optional)."""
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except ValueError as err:
            raise located(name, f"not a JSON object ({first_line(err)})", number) from None
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or set(item) - {"text", "constraints"}:
            raise located(name, 'expected {"text": "...", "constraints": ["...", ...]} (constraints optional)', number)
        constraints = item.get("constraints", [])
        if not isinstance(constraints, list) or not all(isinstance(c, str) for c in constraints):
            raise located(name, '"constraints" must be a list of strings', number)
        yield Source(item["text"], constraints)


def run_translate(checkpoints: list[Path], source: Path | None, output: Path | None, overrides: dict, *,
                  device: str, seed: int, warn: Callable[[str], None], jsonl: bool = False,
                  weights: list[float] | None = None, lm: Path | None = None, lm_weight: float = 0.0,
                  alignment: bool = False, attention_plot: Path | None = None) -> None:
    if alignment or attention_plot is not None:
        overrides = {**overrides, "decode": {**overrides.get("decode", {}), "alignment": True}}
    run = load_translator(checkpoints, overrides, device, weights=weights, lm=lm, lm_weight=lm_weight)
    spec = run.recipe.decode
    if alignment and spec.n_best > 1:
        raise SeqtoolError("--alignment prints the best hypothesis's word alignment: use it with n_best 1")
    model_device = next(run.model.parameters()).device
    generator = torch.Generator(device=model_device).manual_seed(seed)  # for sampling
    lines = read_source(source)
    inputs = read_jsonl(lines, str(source or "<stdin>")) if jsonl else lines
    streaming = output is None and is_stream(source)  # an output file appears only at the end anyway
    translations = translate_lines(run.model, run.vocabs, inputs, spec, device=model_device, warn=warn,
                                   generator=generator, streaming=streaming)
    sink = atomic_open(output) if output else contextlib.nullcontext(sys.stdout)
    with sink as out, out_of_memory_hint("translating", "decode.batch_tokens (--batch-tokens) or decode.beam (--beam)"):
        for number, translation in enumerate(translations):
            if spec.n_best == 1:
                out.write(translation.text + (f" ||| {pharaoh(translation.alignment)}" if alignment else "") + "\n")
            else:
                out.writelines(f"{number} ||| {text} ||| {score:.4f}\n" for text, score in translation.nbest)
            if attention_plot is not None:
                _plot(translation, attention_plot, number + 1)
            if streaming or (output is None and number % 256 == 255):
                out.flush()


def _plot(translation: Translation, directory: Path, number: int) -> None:
    from seqtool.plots import attention_heatmap

    attention = translation.attention
    attention_heatmap(attention.weights, attention.source, attention.target, directory / f"{number:05d}.png",
                      title=f"line {number}")
