"""Question answering on the bAbI tasks (Weston et al. 2015): one answer word per question, measured as
the paper reports it: error per task (%), their mean, and the number of failed tasks (error > 5%).

Training batches are shuffled questions of every task together (joint training when several tasks
are prepared). Validation feeds the model's linear-start switch (seqtool/models/memn2n.py): the
validation loss decides when the memory softmaxes come back.
"""

from __future__ import annotations

import numpy as np
import torch

from seqtool.data.babi import TASK_NAMES, BabiSplit, prepare_babi
from seqtool.data.batching import shard
from seqtool.errors import SeqtoolError
from seqtool.registry import TASKS
from seqtool.tasks.base import Task

DEFAULT_BATCH = 32  # questions per batch when train.batch_size is not set (paper: 32)
EVAL_BATCH = 250
FAILED = 5.0  # a task fails when its error exceeds 5% (the paper's count)


@TASKS.register("qa")
class QATask(Task):
    metrics = ("loss", "accuracy")

    def __init__(self, recipe, directory, device, *, rank: int = 0, world: int = 1):
        super().__init__(recipe, directory, device, rank=rank, world=world)
        self._splits: dict[str, BabiSplit] = {}

    @classmethod
    def prepare(cls, recipe, log, verify=None):
        return prepare_babi(recipe, log, verify)

    @classmethod
    def check(cls, recipe) -> list[str]:
        problems = []
        if recipe.data.babi is None:
            problems.append("task 'qa' reads bAbI: set data.babi (e.g. data.babi.set=en)")
        if recipe.data.tokenizer.kind != "word":
            problems.append("task 'qa' needs data.tokenizer.kind: word (each answer is one word)")
        return problems

    def split(self, name: str) -> BabiSplit:
        if name not in self._splits:
            if not self.data.has(name):
                have = ", ".join(self.data.manifest["splits"])
                raise SeqtoolError(f"{self.directory}: no {name!r} split (have: {have})")
            self._splits[name] = BabiSplit(self.directory, name)
        return self._splits[name]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Every training question once, shuffled by (seed, epoch), in batches of train.batch_size."""
        size = self.recipe.train.batch_size or DEFAULT_BATCH
        order = np.random.default_rng([self.recipe.seed, epoch]).permutation(len(self.split("train")))
        return shard([order[i : i + size] for i in range(0, len(order), size)], self.rank, self.world)

    def batch(self, item: np.ndarray):
        return self.split("train").collate(item).to(self.device)

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
        """The mean error and failed count over validation questions; the loss drives linear start."""
        results = self.evaluate(model, "valid")
        switch = model.linear_start
        metrics = {k: results[k] for k in ("loss", "accuracy", "mean_error", "failed_tasks")}
        metrics["linear"] = float(switch.linear)  # the mode these numbers were measured in
        switch.observe(results["loss"])
        return metrics

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
