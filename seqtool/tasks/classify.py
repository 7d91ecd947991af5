"""Sequence classification, task `classify`: one label per sequence, measured by accuracy (and the loss,
the cross-entropy per sequence). The model keeps the SequenceClassifier contract (seqtool/models/base.py).

The data section names one source (seqtool/data/classify.py): `data.xor` (CDIL-CNN's XOR of marked
positions, card 17), `data.listops` (LRA's ListOps) or `data.text` (files of `label<TAB>text` lines).
Training batches are train.batch_size sequences shuffled by (seed, epoch); evaluation reads a split in
order, in batches of about EVAL_TOKENS padded tokens.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from seqtool.data import listops
from seqtool.data.classify import OFFSET, ClassifySplit, prepare_classify
from seqtool.models.base import VocabSizes
from seqtool.recipe.schema import MAX_GENERATED, DataSpec, Seed, Spec, TokenizerSpec
from seqtool.registry import TASKS
from seqtool.tasks.base import ExampleTask

DEFAULT_BATCH = 32  # sequences per training batch when train.batch_size is not set (CDIL on LRA: 32)
EVAL_TOKENS = 1 << 18  # padded tokens per evaluation batch
MAX_TOKENS = 1 << 31  # generated tokens held in memory at once, all splits together


class GeneratedSpec(Spec):
    train: int = Field(10000, gt=0, le=MAX_GENERATED, description=f"training sequences (at most {MAX_GENERATED:,})")
    valid: int = Field(1000, gt=0, le=MAX_GENERATED, description=f"validation sequences (at most {MAX_GENERATED:,})")
    test: int = Field(1000, gt=0, le=MAX_GENERATED, description=f"test sequences (at most {MAX_GENERATED:,})")
    seed: Seed = Field(1, description="generator seed (independent of the training seed; 0 to 2^64-1)")

    def _fits_memory(self, longest: int) -> None:
        if (self.train + self.valid + self.test) * longest > MAX_TOKENS:
            raise ValueError(f"(train + valid + test) x the longest sequence exceeds {MAX_TOKENS:,} tokens, "
                             "all held in memory; lower the counts or the length")


class XorSpec(GeneratedSpec):
    """The parity of marked positions (seqtool/data/xor.py; CDIL-CNN's XOR with marks: 2)."""

    length: int = Field(1024, ge=2, description="sequence length N")
    marks: int = Field(2, ge=1, description="marked positions whose bits make the label (2: XOR)")
    levels: int = Field(2, ge=2, description="bins of a value U(0,1), even so that bin >= levels/2 is x >= 0.5 (2: "
                        "the token carries the bit the label reads, as the paper's real x does through one threshold)")

    @model_validator(mode="after")
    def _consistent(self) -> XorSpec:
        if self.levels % 2:
            raise ValueError(f"levels must be even (got {self.levels})")
        if self.marks > self.length:
            raise ValueError(f"marks ({self.marks}) exceed the length ({self.length})")
        self._fits_memory(self.length)
        return self


class ListOpsSpec(GeneratedSpec):
    """Nested MAX/MIN/MED/SM expressions over digits (seqtool/data/listops.py; LRA's ListOps)."""

    min_length: int = Field(500, ge=listops.SHORTEST, description="shortest expression, in symbols "
                            "(operators, digits and ]; LRA counted its parenthesised text)")
    max_length: int = Field(2000, ge=listops.SHORTEST, description="longest expression, in symbols")
    max_depth: int = Field(10, ge=2, le=50, description="tree depth: operators nest at most max_depth - 1 deep "
                           "(LRA: 10)")
    max_args: int = Field(10, ge=2, le=100, description="arguments per operator, at most (LRA: 10)")

    @model_validator(mode="after")
    def _consistent(self) -> ListOpsSpec:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length ({self.min_length}) above max_length ({self.max_length})")
        most = listops.longest(self.max_depth, self.max_args)
        if self.min_length > most:
            raise ValueError(f"min_length ({self.min_length}): no expression of depth {self.max_depth} with "
                             f"{self.max_args} arguments is longer than {most}")
        self._fits_memory(self.max_length)
        return self


class LabelledTextSpec(Spec):
    """Files of `label<TAB>text` lines, one example per line (paths under the data root)."""

    train: str = Field(description="training file; its labels are the classes")
    valid: str = Field(description="validation file")
    test: str | None = Field(None, description="test file (null: none)")
    max_len: int = Field(4000, gt=0, description="texts longer than this many tokens are cut to it")
    encoding_errors: Literal["strict", "replace", "skip"] = Field(
        "strict", description="non-UTF-8 input: fail naming line and byte, replace bad bytes, or skip the line")


class ClassifyDataSpec(DataSpec):
    """The data section of task classify: exactly one of xor, listops, text."""

    xor: XorSpec | None = Field(None, description="generated parity of marked positions (e.g. data.xor.length=1024)")
    listops: ListOpsSpec | None = Field(None, description="generated ListOps (e.g. data.listops.max_length=512)")
    text: LabelledTextSpec | None = Field(None, description="labelled text files (e.g. data.text.train=...)")
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec, description="text only: how texts become tokens")

    @model_validator(mode="after")
    def _one_source(self) -> ClassifyDataSpec:
        given = [name for name in ("xor", "listops", "text") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"task classify needs exactly one of data.xor, data.listops, data.text (got "
                             f"{', '.join(given) or 'none'})")
        return self

    def source(self) -> tuple[str, Spec]:
        """The source's name and its section."""
        for name in ("xor", "listops", "text"):
            if getattr(self, name) is not None:
                return name, getattr(self, name)
        raise AssertionError("validated to have one source")

    def longest(self) -> int:
        """The longest sequence the data can hold (what a model's receptive field must cover)."""
        name, spec = self.source()
        if name == "xor":
            return spec.length
        return spec.max_length if name == "listops" else spec.max_len


@TASKS.register("classify", config=ClassifyDataSpec)
class ClassifyTask(ExampleTask):
    metrics = ("loss", "accuracy")
    split_class = ClassifySplit
    default_batch = DEFAULT_BATCH

    @classmethod
    def prepare(cls, recipe, log, verify=None):
        return prepare_classify(recipe, log, verify)

    @classmethod
    def expected_sizes(cls, recipe) -> VocabSizes:
        """The model's sizes before any data exists: known for generated sources; for text the tokenizer's
        vocab_size and two classes stand in (the labels are known after prepare only)."""
        name, spec = recipe.data.source()
        if name == "xor":
            return VocabSizes(OFFSET + 2 * spec.levels, 2)
        if name == "listops":
            return VocabSizes(OFFSET + len(listops.SYMBOLS), len(listops.DIGITS))
        return VocabSizes(recipe.data.tokenizer.vocab_size or 40000, 2)

    def sizes(self) -> VocabSizes:
        return VocabSizes(len(self.vocabs.src), len(self.data.manifest["classes"]))

    def evaluate(self, model, name: str, settings=None, limit: int | None = None) -> dict[str, float]:
        """The mean cross-entropy per sequence and the accuracy over the split's first `limit` sequences."""
        split = self.split(name)
        count = len(split) if limit is None else min(limit, len(split))
        step = max(1, EVAL_TOKENS // max(int(split.lengths[:count].max(initial=1)), 1))
        nll, right = 0.0, 0
        with torch.inference_mode():
            for start in range(0, count, step):
                batch = split.collate(np.arange(start, min(start + step, count))).to(self.device)
                logits = model(batch.tokens, batch.mask).float()
                nll += float(torch.nn.functional.cross_entropy(logits, batch.labels, reduction="sum"))
                right += int((logits.argmax(-1) == batch.labels).sum())
        return {"loss": nll / max(count, 1), "accuracy": right / max(count, 1)}

    def validate(self, model) -> dict[str, float]:
        return self.evaluate(model, "valid")
