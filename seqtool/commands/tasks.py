"""Opening a recipe's task on its prepared data: the one "look up, prepare, build" sequence that
`train`, `eval`, `automaton`, the benchmarks and the tests share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from seqtool.commands.recipes import Recipe
from seqtool.data.prepare import prepared_dir
from seqtool.registry import TASKS
from seqtool.tasks.base import Task


def task_class(name: str) -> type[Task]:
    return TASKS.get(name).builder


def prepare_task(recipe: Recipe, log: Callable[[str], None] = lambda _: None) -> Path:
    """Prepare the recipe's data (a no-op when up to date); returns the prepared directory."""
    return task_class(recipe.task).prepare(recipe, log=log)


def open_task(recipe: Recipe, device: torch.device | str = "cpu", *, prepare: bool = True,
              log: Callable[[str], None] = lambda _: None, rank: int = 0, world: int = 1) -> Task:
    """The recipe's task for one process, on data prepared first unless `prepare` is false (another
    process prepared it)."""
    directory = prepare_task(recipe, log) if prepare else prepared_dir(recipe)
    return task_class(recipe.task)(recipe, directory, device, rank=rank, world=world)
