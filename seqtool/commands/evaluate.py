"""`seqtool eval`: a trained run measured on one split of its recipe's data, or (translation) on any
pair of source and reference files."""

from __future__ import annotations

from pathlib import Path

from seqtool.commands.runs import LoadedRun, load_run, load_translation_run, pick_device, same_tokenizer
from seqtool.commands.tasks import open_task, prepare_task, task_class
from seqtool.data.prepare import prepared_dir
from seqtool.data.textio import iter_pairs
from seqtool.decoding.forced import force_lines
from seqtool.decoding.translate import translate_lines
from seqtool.errors import SeqtoolError
from seqtool.evaluation.metrics import corpus_metrics, perplexity
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
        fine_tuned = run.recipe.train.init_from is not None  # its tokenizer is its parent's, carried in its checkpoint
        prepare_task(run.recipe, tokenizer=run.payload.get("tokenizer", {}) if fine_tuned else None)
    if not same_tokenizer(directory, run.payload):
        raise SeqtoolError(f"{directory}: prepared with another tokenizer than {run.path}")
    return directory


def evaluate_run(target: Path, split: str, overrides: dict, device: str = "auto") -> dict:
    run = load_run(target, overrides, pick_device(device))
    task = open_task(run.recipe, next(run.model.parameters()).device, directory=run_data(run))
    if not task.data.corpus_splits(split):
        raise SeqtoolError(f"--split {split}: the recipe has no such split "
                           f"(have: {', '.join(task.data.manifest['splits'])})")
    settings = run.recipe.decode.model_copy(update={"n_best": 1, "strategy": "beam"})
    with out_of_memory_hint("evaluating", "decode.batch_tokens or decode.beam (--beam)"):
        metrics = task.evaluate(run.model, split, settings)
    return {"checkpoint": str(run.path), "step": run.payload.get("trainer", {}).get("step"), "task": run.recipe.task,
            "split": split, **metrics}


def evaluate_files(target: Path, src: Path, ref: Path, overrides: dict, device: str = "auto") -> dict:
    """What `eval` reports on a split, for a source file and its reference translations: the loss and
    perplexity of the references (forced decoding) and the recipe's metrics of the translations."""
    run = load_translation_run(target, overrides, device, "eval --src/--ref")
    pairs = list(iter_pairs(src, ref))
    if not pairs:
        raise SeqtoolError(f"{src}: empty file")
    sources, references = [s for s, _ in pairs], [r for _, r in pairs]
    settings = run.recipe.decode.model_copy(update={"n_best": 1, "strategy": "beam"})
    device_ = next(run.model.parameters()).device
    with out_of_memory_hint("evaluating", "decode.batch_tokens or decode.beam (--beam)"):
        forced = list(force_lines(run.model, run.vocabs, pairs, settings, device=device_))
        hyps = [t.text for t in translate_lines(run.model, run.vocabs, sources, settings, device=device_)]
    nll, count = -sum(f.log_prob for f in forced), sum(f.tokens for f in forced)
    metrics = corpus_metrics(hyps, references, run.recipe.eval.metrics, run.recipe.eval.tokenize)
    return {"checkpoint": str(run.path), "step": run.payload.get("trainer", {}).get("step"), "task": run.recipe.task,
            "src": str(src), "ref": str(ref), "loss": nll / count, "ppl": perplexity(nll, count),
            **{key: m.score for key, m in metrics.items()}}


def format_result(result: dict) -> str:
    """The text `seqtool eval` prints for a result of evaluate_run (its task decides the layout)."""
    return task_class(result["task"]).format_result(result)
