"""Fine-tuning (`train.init_from`): a new run that starts from a trained run's weights and tokenizer.

As fairseq's --finetune-from-model and eole's train_from with reset_optim, but with fewer ways in: the
parent is read once before anything is written, its model section must be the recipe's (keys that
change no weights, the dropouts, may differ), its tokenizer encodes the new data (so the embeddings
keep their meaning), and `train.init_reset` names what starts afresh. Resuming a fine-tuned run reads
its own checkpoints only; the parent is not needed again.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from seqtool.commands.recipes import Recipe, drop_retired
from seqtool.commands.runs import checkpoint_path, write_tokenizer
from seqtool.errors import SeqtoolError
from seqtool.registry import TASKS
from seqtool.tasks.base import Task
from seqtool.training.checkpoint import load_checkpoint

KEY = "train.init_from"


def load_parent(recipe: Recipe) -> dict | None:
    """The checkpoint `train.init_from` names, checked to fit the recipe (None without one)."""
    if recipe.train.init_from is None:
        return None
    try:
        path = checkpoint_path(Path(recipe.train.init_from))
        payload = load_checkpoint(path)
    except SeqtoolError as err:
        raise SeqtoolError(f"{KEY}: {err}") from None
    _check_fits(recipe, payload, path)
    return payload


def _check_fits(recipe: Recipe, payload: dict, path: Path) -> None:
    """Refuse a parent whose task, model or state the recipe cannot start from."""
    parent = drop_retired(payload["recipe"])
    if parent.get("task") != recipe.task:
        raise SeqtoolError(f"{KEY}: {path} is a {parent.get('task')!r} run; this recipe's task is {recipe.task!r}")
    key = first_difference(recipe.model_dump(mode="json")["model"], parent.get("model", {}), "model")
    if key is not None:
        raise SeqtoolError(f"{KEY}: {key} differs from {path}'s ({_value(parent, key)}); fine-tuning needs the "
                           "parent's architecture (only dropout keys may differ)")
    task = TASKS.get(recipe.task).builder
    if payload.get("tokenizer") and task.prepare.__func__ is not Task.prepare.__func__:
        raise SeqtoolError(f"{KEY}: task {recipe.task!r} makes its vocabulary from its data; fine-tuning with the "
                           "parent's tokenizer needs a text task (translation, lm)")
    if "optimizer" not in recipe.train.init_reset:
        _check_optimizer(recipe, parent, payload, path)


def first_difference(ours: dict, theirs: dict, prefix: str) -> str | None:
    """The first key (dotted, in our order, then theirs) whose values differ; dropout keys never count."""
    for name in [*ours, *(k for k in theirs if k not in ours)]:
        key, a, b = f"{prefix}.{name}", ours.get(name), theirs.get(name)
        if "dropout" in name or a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return first_difference(a, b, key)
        return key
    return None


def _value(recipe: dict, key: str) -> str:
    value = recipe
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return "absent there"
        value = value[part]
    return f"{value!r} there"


def _check_optimizer(recipe: Recipe, parent: dict, payload: dict, path: Path) -> None:
    name = parent.get("train", {}).get("optimizer", {}).get("name")
    if not isinstance(payload.get("optimizer"), dict):
        raise SeqtoolError(f"train.init_reset: {path} has no optimizer state to keep (list optimizer in init_reset)")
    if name != recipe.train.optimizer.name:
        raise SeqtoolError(f"train.init_reset: keeping the optimizer state needs the parent's train.optimizer.name "
                           f"({name}), not {recipe.train.optimizer.name} (list optimizer in init_reset)")


@contextlib.contextmanager
def tokenizer_directory(files: dict) -> Iterator[Path]:
    """A checkpoint's packed tokenizer files as a temporary directory, for prepare to copy and use."""
    with tempfile.TemporaryDirectory() as tmp:
        yield write_tokenizer(files, Path(tmp) / "tokenizer")
