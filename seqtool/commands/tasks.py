"""Opening a recipe's task on its prepared data: the one "look up, prepare, build" sequence that
`train`, `eval`, `automaton`, the benchmarks and the tests share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from seqtool.commands.finetune import load_parent, tokenizer_directory
from seqtool.commands.recipes import Recipe
from seqtool.registry import TASKS
from seqtool.tasks.base import Task


def task_class(name: str) -> type[Task]:
    return TASKS.get(name).builder


def prepare_task(recipe: Recipe, log: Callable[[str], None] = lambda _: None,
                 verify: Callable[[Path], None] | None = None, tokenizer: dict | None = None) -> Path:
    """Prepare the recipe's data (a no-op when up to date); returns the prepared directory. `verify`
    may refuse existing data before anything is replaced. A fine-tuning recipe (train.init_from) encodes
    with the `tokenizer` files given (a checkpoint's packed ones), by default its parent's."""
    task = task_class(recipe.task)
    if recipe.train.init_from is not None and tokenizer is None:
        tokenizer = load_parent(recipe).get("tokenizer", {})
    if not tokenizer:
        return task.prepare(recipe, log=log, verify=verify)
    with tokenizer_directory(tokenizer) as directory:
        return task.prepare(recipe, log=log, verify=verify, tokenizer=directory)


def open_task(recipe: Recipe, device: torch.device | str = "cpu", *, directory: Path | None = None,
              log: Callable[[str], None] = lambda _: None, rank: int = 0, world: int = 1) -> Task:
    """The recipe's task for one process, on `directory` when its data is prepared already (by another
    process, or checked by the caller), else on data prepared first."""
    directory = prepare_task(recipe, log) if directory is None else directory
    return task_class(recipe.task)(recipe, directory, device, rank=rank, world=world)
