"""`seqtool eval`: a trained run measured on one split of its recipe's data."""

from __future__ import annotations

from pathlib import Path

from seqtool.data.datasets import PreparedData
from seqtool.data.prepare import prepare, prepared_dir
from seqtool.decoding.search import SearchSettings
from seqtool.errors import SeqtoolError
from seqtool.runs import load_run, pack_tokenizer, pick_device, tokenizer_sha256
from seqtool.tasks import build_task


def evaluate_run(target: Path, split: str, overrides: dict, device: str = "auto") -> dict:
    run = load_run(target, overrides, pick_device(device))
    directory = prepared_dir(run.recipe)
    if not (directory / "manifest.json").exists():
        prepare(run.recipe, log=lambda _: None)
    if tokenizer_sha256(pack_tokenizer(directory / "tokenizer")) != run.payload.get("tokenizer_sha256"):
        raise SeqtoolError(f"{directory}: prepared with another tokenizer than {run.path}")
    data = PreparedData(directory)
    if not data.has(split):
        raise SeqtoolError(f"--split {split}: the recipe has no such split (have: {', '.join(data.manifest['splits'])})")
    task = build_task(run.recipe, data, run.vocabs, next(run.model.parameters()).device)
    metrics = task.evaluate(run.model, split, SearchSettings.from_spec(run.recipe.decode, n_best=1, sample=False))
    return {"checkpoint": str(run.path), "step": run.payload["trainer"]["step"], "split": split, **metrics}
