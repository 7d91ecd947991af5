"""What every task provides to `train`, `eval` and the trainer.

A task prepares its data once (rank 0, before training), then, per process, turns the prepared
directory into batches: `epoch_batches(epoch)` is a pure function of the epoch (so resume can skip
what was consumed), `batch(item)` makes the tensors, `validate`/`evaluate` measure a model and return
plain numbers, among them every name in `metrics` that early stopping may select.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from seqtool.data.datasets import PreparedData
from seqtool.data.prepare import prepare
from seqtool.data.vocab import Vocabs
from seqtool.models.base import VocabSizes


class Task:
    metrics: ClassVar[tuple[str, ...]] = ("loss",)

    def __init__(self, recipe, directory: Path, device, *, rank: int = 0, world: int = 1):
        self.recipe, self.directory, self.device = recipe, Path(directory), device
        self.rank, self.world = rank, world
        self.data = PreparedData(self.directory)
        self.vocabs = Vocabs.load(self.directory / "tokenizer")

    @classmethod
    def prepare(cls, recipe, log, verify=None) -> Path:
        """Make the prepared directory (idempotent); the default reads text corpora. `verify(directory)`
        may refuse the data before it replaces anything."""
        return prepare(recipe, log, verify)

    @classmethod
    def check(cls, recipe) -> list[str]:
        """Recipe problems specific to this task, found before any work starts."""
        return []

    def sizes(self) -> VocabSizes:
        return VocabSizes(len(self.vocabs.src), len(self.vocabs.tgt))

    def epoch_batches(self, epoch: int) -> list:
        raise NotImplementedError

    def batch(self, item):
        raise NotImplementedError

    def validate(self, model) -> dict[str, float]:
        raise NotImplementedError

    def evaluate(self, model, split: str, settings=None, limit: int | None = None) -> dict[str, float]:
        raise NotImplementedError

    @classmethod
    def format_result(cls, result: dict) -> str:
        """`seqtool eval` without --json: one `key<TAB>value` line per result (tasks may add a table)."""
        return "".join(f"{k}\t{v:.4f}\n" if isinstance(v, float) else f"{k}\t{v}\n" for k, v in result.items())
