"""The model `translate` decodes with: one run, an ensemble of runs (-c A -c B [--weights]), and
optionally a language model of the target vocabulary fused into it (--lm RUN --lm-weight). The
members must share their tokenizers, and the LM the translation model's target tokenizer, byte for
byte (the tokenizer files every checkpoint carries)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from seqtool.commands.runs import LoadedRun, load_run, load_translation_run, pick_device, tokenizer_sha256
from seqtool.decoding.ensemble import Ensemble
from seqtool.decoding.fusion import ShallowFusion
from seqtool.errors import SeqtoolError


def side_sha256(run: LoadedRun, side: str) -> str:
    """A hash of the tokenizer files of one side (src or tgt) of a run; a joint vocabulary's target
    side is its source side, and a language model's text is its src side."""
    files = run.payload.get("tokenizer") or {}
    joint = json.loads(files["vocabs.json"].numpy().tobytes())["joint"] if "vocabs.json" in files else True
    prefix = "src/" if joint or side == "src" else "tgt/"
    return tokenizer_sha256({name[len(prefix):]: data for name, data in files.items() if name.startswith(prefix)})


def load_translator(checkpoints: list[Path], overrides: dict, device: str, *,
                    weights: list[float] | None = None, lm: Path | None = None, lm_weight: float = 0.0) -> LoadedRun:
    """The first run, its model replaced by the ensemble of every run (one run: itself), fused with
    the language model `lm` when given."""
    runs = [load_translation_run(path, overrides, device, "translate") for path in checkpoints]
    first = runs[0]
    for run in runs[1:]:
        for side, name in (("src", "source"), ("tgt", "target")):
            if side_sha256(run, side) != side_sha256(first, side):
                raise SeqtoolError(f"{run.path}: its {name} vocabulary differs from {first.path}'s; an ensemble "
                                   "needs members trained on the same tokenizers")
    if weights is not None and (len(weights) != len(runs) or min(weights) <= 0):
        raise SeqtoolError(f"--weights: {len(runs)} positive numbers expected (one per -c), got "
                           f"{','.join(map(str, weights))}")
    model = first.model if len(runs) == 1 else Ensemble([r.model for r in runs], weights)
    if lm is not None:
        model = ShallowFusion(model, _language_model(lm, first, pick_device(device)), lm_weight)
    return dataclasses.replace(first, model=model.eval())


def _language_model(path: Path, translator: LoadedRun, device: torch.device) -> torch.nn.Module:
    run = load_run(path, None, device)
    if run.recipe.task != "lm":
        raise SeqtoolError(f"--lm {run.path}: a {run.recipe.task!r} run; shallow fusion needs a language model "
                           "(task lm)")
    if side_sha256(run, "src") != side_sha256(translator, "tgt"):
        raise SeqtoolError(f"--lm {run.path}: its vocabulary differs from the target vocabulary of "
                           f"{translator.path}; train the LM on target-side text with the same tokenizer")
    return run.model
