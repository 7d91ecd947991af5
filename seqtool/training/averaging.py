"""Checkpoint averaging: the element-wise mean of the weights of several checkpoints of one run
(Junczys-Dowmunt et al. 2016; Vaswani et al. 2017 average the last 5 or 20), written as a new
checkpoint that `eval` and `translate` read like any other.

The result keeps the recipe, vocabulary sizes and tokenizer of the newest input and its training
step, plus `averaged` (the input file names); it holds no optimizer state, so it is for evaluation
and decoding, not for resuming. Float tensors are averaged in float64 and cast back; integer
buffers (counters) are taken from the newest checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch

from seqtool.errors import SeqtoolError
from seqtool.training.checkpoint import load_checkpoint

_KEPT = ("recipe", "sizes", "tokenizer", "tokenizer_sha256")


def last_checkpoints(run_dir: Path, count: int) -> list[Path]:
    """The run's `count` newest step checkpoints, oldest first."""
    directory = Path(run_dir) / "checkpoints"
    steps = sorted(directory.glob("step_*.pt"), key=lambda p: int(p.stem[5:]))
    if len(steps) < count:
        raise SeqtoolError(f"{directory}: {len(steps)} step checkpoints, cannot average the last {count} "
                           "(keep more with train.checkpoint.keep_last)")
    return steps[-count:]


def average_checkpoints(paths: list[Path]) -> dict:
    """One checkpoint payload whose weights are the mean of `paths`' (all of the same model)."""
    if not paths:
        raise SeqtoolError("average: no checkpoints given")
    total: dict[str, torch.Tensor] = {}
    first = None
    for path in paths:
        payload = load_checkpoint(path)
        first = first or (path, payload)
        _check_same_model(first, path, payload)
        for key, value in payload["model"].items():
            if value.is_floating_point():
                total[key] = total[key] + value.double() if key in total else value.double()
    newest = payload
    model = {key: (total[key] / len(paths)).to(value.dtype) if value.is_floating_point() else value
             for key, value in newest["model"].items()}
    return {**{k: newest[k] for k in _KEPT if k in newest}, "model": model,
            "trainer": {"step": newest.get("trainer", {}).get("step")}, "averaged": [str(p) for p in paths]}


def _check_same_model(first: tuple[Path, dict], path: Path, payload: dict) -> None:
    first_path, reference = first
    if payload["recipe"].get("model") != reference["recipe"].get("model"):
        raise SeqtoolError(f"{path}: another model than {first_path}; only checkpoints of one model can be averaged")
    if payload.get("tokenizer_sha256") != reference.get("tokenizer_sha256"):
        raise SeqtoolError(f"{path}: another tokenizer than {first_path}")
    shapes = {k: tuple(v.shape) for k, v in payload["model"].items()}
    if shapes != {k: tuple(v.shape) for k, v in reference["model"].items()}:
        raise SeqtoolError(f"{path}: its weights do not match {first_path}'s names and shapes")
