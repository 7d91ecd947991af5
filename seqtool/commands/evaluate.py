"""`seqtool eval`: a trained run measured on one split of its recipe's data."""

from __future__ import annotations

from pathlib import Path

from seqtool.commands.runs import LoadedRun, load_run, pick_device, same_tokenizer
from seqtool.commands.tasks import open_task, prepare_task, task_class
from seqtool.data.prepare import prepared_dir
from seqtool.errors import SeqtoolError
from seqtool.util.oom import out_of_memory_hint


def run_data(run: LoadedRun) -> Path:
    """The prepared data of a loaded run, checked against its tokenizer. Prepared when missing only in
    the run's own directory (<run>/data); elsewhere, as for a checkpoint copied out of its run, it is
    read where it already exists, so evaluating never writes outside a run directory."""
    directory = prepared_dir(run.recipe)
    if not (directory / "manifest.json").exists():
        if run.run_dir is None or directory != run.run_dir / "data":
            where = "is not inside a run directory" if run.run_dir is None else "names its data elsewhere"
            raise SeqtoolError(f"{run.path}: no prepared data at {directory} (the checkpoint {where}); prepare "
                               "its recipe there with `seqtool prepare`, or evaluate the run directory")
        prepare_task(run.recipe)
    if not same_tokenizer(directory, run.payload):
        raise SeqtoolError(f"{directory}: prepared with another tokenizer than {run.path}")
    return directory


def evaluate_run(target: Path, split: str, overrides: dict, device: str = "auto") -> dict:
    run = load_run(target, overrides, pick_device(device))
    task = open_task(run.recipe, next(run.model.parameters()).device, directory=run_data(run))
    if not task.data.has(split):
        raise SeqtoolError(f"--split {split}: the recipe has no such split "
                           f"(have: {', '.join(task.data.manifest['splits'])})")
    settings = run.recipe.decode.model_copy(update={"n_best": 1, "strategy": "beam"})
    with out_of_memory_hint("evaluating", "decode.batch_tokens or decode.beam (--beam)"):
        metrics = task.evaluate(run.model, split, settings)
    return {"checkpoint": str(run.path), "step": run.payload.get("trainer", {}).get("step"), "task": run.recipe.task,
            "split": split, **metrics}


def format_result(result: dict) -> str:
    """The text `seqtool eval` prints for a result of evaluate_run (its task decides the layout)."""
    return task_class(result["task"]).format_result(result)
