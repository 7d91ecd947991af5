"""Tasks turn prepared data into training batches and measure models on held-out splits."""

from __future__ import annotations

from seqtool.tasks.lm import LanguageModelTask
from seqtool.tasks.translation import TranslationTask

TASKS = {"translation": TranslationTask, "lm": LanguageModelTask}


def build_task(recipe, data, vocabs, device, *, rank: int = 0, world: int = 1):
    return TASKS[recipe.task](recipe, data, vocabs, device, rank=rank, world=world)
