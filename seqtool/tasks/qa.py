"""Question answering on the bAbI tasks (Weston et al. 2015): one answer word per question, measured as
the paper reports it: error per task (%), their mean, and the number of failed tasks (error > 5%).

Training batches are shuffled questions of every task together (joint training when several tasks
are prepared). The model is a ClassifierModel (seqtool/models/base.py); its `validated` hook takes the
validation loss (MemN2N's linear start: it decides when the memory softmaxes come back).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from seqtool.data.babi import TASK_NAMES, BabiSplit, prepare_babi
from seqtool.recipe.schema import DataSpec, Spec, TokenizerSpec
from seqtool.registry import TASKS
from seqtool.tasks.base import ExampleTask

DEFAULT_BATCH = 32  # questions per batch when train.batch_size is not set (paper: 32)
EVAL_BATCH = 250
FAILED = 5.0  # a task fails when its error exceeds 5% (the paper's count)


class BabiSpec(Spec):
    """The bAbI question-answering tasks v1.2 (Weston et al. 2015), read by task qa (seqtool/data/babi.py)."""

    root: str = Field("babi/tasks_1-20_v1-2", description="the release's folder under the data root")
    set: Literal["en", "en-10k"] = Field("en", description="en: 1,000 training questions per task; en-10k: 10,000")
    tasks: list[int] | Literal["all"] = Field(
        "all", description="bAbI task numbers (1-20) trained and tested together, or all 20 (joint training)"
    )
    valid_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of each task's training questions held out for validation, as whole "
        "stories from the end of the file (paper: 10%)"
    )
    memory_size: int = Field(
        50, gt=0, description="a question sees the most recent N statements of its story (paper: 50)"
    )
    missing_ok: bool = Field(
        False, description="a missing task file: false fails naming it; true skips that task and goes on with the rest"
    )

    @model_validator(mode="after")
    def _known_tasks(self) -> BabiSpec:
        if self.tasks != "all" and (not self.tasks or any(not 1 <= t <= 20 for t in self.tasks)
                                    or len(set(self.tasks)) != len(self.tasks)):
            raise ValueError(f"tasks: distinct numbers from 1 to 20, or all (got {self.tasks})")
        return self


class QADataSpec(DataSpec):
    """The data section of task qa."""

    babi: BabiSpec = Field(description="the bAbI tasks to read (e.g. data.babi.set=en)")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)


@TASKS.register("qa", config=QADataSpec)
class QATask(ExampleTask):
    metrics = ("loss", "accuracy")
    split_class = BabiSplit
    default_batch = DEFAULT_BATCH

    @classmethod
    def prepare(cls, recipe, log, verify=None):
        return prepare_babi(recipe, log, verify)

    @classmethod
    def check(cls, recipe) -> list[str]:
        problems = []
        if recipe.data.tokenizer.kind != "word":
            problems.append("task 'qa' needs data.tokenizer.kind: word (each answer is one word)")
        return problems

    def evaluate(self, model, name: str, settings=None, limit: int | None = None) -> dict[str, float]:
        """Loss, accuracy over questions, error (%) per task, their mean and the failed-task count."""
        split = self.split(name)
        count = len(split) if limit is None else min(limit, len(split))
        nll, right = 0.0, np.zeros(count, dtype=bool)
        with torch.inference_mode():
            for start in range(0, count, EVAL_BATCH):
                index = np.arange(start, min(start + EVAL_BATCH, count))
                batch = split.collate(index).to(self.device)
                logits, _ = model(batch.story, batch.query)
                nll += float(torch.nn.functional.cross_entropy(logits, batch.answer, reduction="sum"))
                right[index] = (logits.argmax(1) == batch.answer).cpu().numpy()
        tasks = split.tasks[:count]
        errors = {int(t): 100.0 * float(1 - right[tasks == t].mean()) for t in np.unique(tasks)}
        return {"loss": nll / max(count, 1), "accuracy": float(right.mean()),
                "mean_error": float(np.mean(list(errors.values()))),
                "failed_tasks": float(sum(e > FAILED for e in errors.values())),
                **{f"error_qa{t}": e for t, e in errors.items()}}

    def validate(self, model) -> dict[str, float]:
        """The loss, accuracy, mean error and failed count over validation questions."""
        results = self.evaluate(model, "valid")
        return {k: results[k] for k in ("loss", "accuracy", "mean_error", "failed_tasks")}

    @classmethod
    def format_result(cls, result: dict) -> str:
        """The paper's table: error per task, then the mean and the failed count; other keys below."""
        lines = [f"{'bAbI task':<30}{'error %':>8}"]
        tasks = sorted(int(k[len("error_qa"):]) for k in result if k.startswith("error_qa"))
        lines += [f"{t:>2} {TASK_NAMES[t]:<27}{result[f'error_qa{t}']:>8.1f}" for t in tasks]
        lines.append(f"{'mean error':<30}{result['mean_error']:>8.1f}")
        lines.append(f"{'failed tasks (error > 5%)':<30}{int(result['failed_tasks']):>8d}")
        shown = {"mean_error", "failed_tasks", *(f"error_qa{t}" for t in tasks)}
        rest = {k: v for k, v in result.items() if k not in shown}
        return "\n".join(lines) + "\n" + super().format_result(rest)
