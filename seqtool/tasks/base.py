"""What every task provides to `train`, `eval` and the trainer (the Task contract, an abstract base).

A task is registered with its data spec (`TASKS.register(name, config=SpecClass)`, SpecClass a
seqtool.recipe.schema.DataSpec): the recipe's `data` section is validated by it, so a new task is one
module here plus its spec, with no edit to the schema or the trainer (import it in tasks/__init__.py).

A task prepares its data once (rank 0, before training), then, per process, turns the prepared
directory into batches: `epoch_batches(epoch)` is a pure function of the epoch (so resume can skip
what was consumed), `batch(item)` makes the tensors the model's `loss` takes, `validate`/`evaluate`
measure a model and return plain numbers, among them every name in `metrics` that early stopping may
select (seqtool/metric_table.py says which way each is better). The models a task trains keep one of
the contracts in seqtool/models/base.py: translation a Seq2SeqModel, lm a LanguageModel, qa a
ClassifierModel, synthetic and music a SequenceModel, classify a SequenceClassifier.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from seqtool.data.batching import poisson_batches, shard
from seqtool.data.datasets import PreparedData
from seqtool.data.prepare import prepare
from seqtool.data.vocab import Vocabs
from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes


class Task(ABC):
    metrics: ClassVar[tuple[str, ...]] = ("loss",)
    example_level: ClassVar[bool] = False  # batches are sets of whole, independent examples (DP-SGD needs it)

    def __init__(self, recipe, directory: Path, device, *, rank: int = 0, world: int = 1):
        self.recipe, self.directory, self.device = recipe, Path(directory), device
        self.rank, self.world = rank, world
        self.data = PreparedData(self.directory)
        self.vocabs = Vocabs.load(self.directory / "tokenizer")

    @classmethod
    def prepare(cls, recipe, log, verify=None, tokenizer: Path | None = None) -> Path:
        """Make the prepared directory (idempotent); the default reads text corpora. `verify(directory)`
        may refuse the data before it replaces anything; `tokenizer` (a saved Vocabs directory, a
        fine-tuned run's parent's) encodes it instead of one trained on it. A task that overrides this
        makes its own vocabulary and takes no tokenizer."""
        return prepare(recipe, log, verify, tokenizer)

    @classmethod
    def check(cls, recipe) -> list[str]:
        """Recipe problems specific to this task, found before any work starts."""
        return []

    def sizes(self) -> VocabSizes:
        return VocabSizes(len(self.vocabs.src), len(self.vocabs.tgt))

    @abstractmethod
    def epoch_batches(self, epoch: int) -> list:
        """This rank's batch descriptions for an epoch (cheap: indices, not tensors)."""

    @abstractmethod
    def batch(self, item):
        """The tensors of one batch description, on the task's device."""

    @abstractmethod
    def validate(self, model) -> dict[str, float]:
        """Metrics on the validation split during training."""

    @abstractmethod
    def evaluate(self, model, split: str, settings=None, limit: int | None = None) -> dict[str, float]:
        """Metrics on a split; `settings` (a DecodeSpec) for tasks that decode."""

    def samples(self, model, split: str, settings, count: int) -> list[str]:
        """A few worked examples of a split for the log after training (none by default)."""
        return []

    @classmethod
    def format_result(cls, result: dict) -> str:
        """`seqtool eval` without --json: one `key<TAB>value` line per result (tasks may add a table)."""
        return "".join(f"{k}\t{v:.4f}\n" if isinstance(v, float) else f"{k}\t{v}\n" for k, v in result.items())


class ExampleTask(Task):
    """A task over whole examples with one answer each (qa, classify): splits read lazily from the
    prepared directory by `split_class(directory, name)`, and every training example once an epoch,
    shuffled by (seed, epoch), in batches of train.batch_size (else `default_batch`)."""

    split_class: ClassVar[type]
    default_batch: ClassVar[int] = 32
    example_level = True

    def __init__(self, recipe, directory: Path, device, *, rank: int = 0, world: int = 1):
        super().__init__(recipe, directory, device, rank=rank, world=world)
        self._splits: dict = {}

    def split(self, name: str):
        if name not in self._splits:
            if not self.data.has(name):
                have = ", ".join(self.data.manifest["splits"])
                raise SeqtoolError(f"{self.directory}: no {name!r} split (have: {have})")
            self._splits[name] = self.split_class(self.directory, name)
        return self._splits[name]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Under train.privacy each batch draws every example with probability size/N (Poisson sampling, what
        DP-SGD's accountant assumes), N/size batches an epoch; otherwise a shuffled partition."""
        size, count = self.batch_size(), self.train_examples()
        rng = np.random.default_rng([self.recipe.seed, epoch])
        if self.recipe.train.privacy is not None:
            return shard(poisson_batches(rng, count, size), self.rank, self.world)
        order = rng.permutation(count)
        return shard([order[i : i + size] for i in range(0, len(order), size)], self.rank, self.world)

    def batch_size(self) -> int:
        return self.recipe.train.batch_size or self.default_batch

    def train_examples(self) -> int:
        return len(self.split("train"))

    def batch(self, item: np.ndarray):
        return self.split("train").collate(item).to(self.device)
