"""Sequence tasks for recurrent cells and norms: `synthetic` (generated from a seed: copy, denoise, adding,
recall, tomita, dyck, arma, cfl; seqtool/data/sequences.py, formal.py, cfl.py) and `music` (piano rolls;
data/music.py).

`prepare` writes each split's arrays (.npy) and a manifest with what the model reads and predicts:
    input   symbols (one-hot encoded in batches) or features, `size` wide
    output  class (softmax over `size` classes per head, `heads` heads; cross-entropy), multi (`size`
            independent Bernoulli units; binary cross-entropy) or real (`size` values; squared error)
`sizes()` tells the model VocabSizes(src = input width, tgt = outputs per step = size * heads).
Metrics: `loss` (the objective per weighted output: cross-entropy per symbol, NLL per music frame, MSE),
and for classes `accuracy` over the scored outputs (the recalled symbols, the string labels; per head
`accuracy_k<delay>` and `max_delay`, the largest delay recalled with accuracy >= 0.9, for recall; no
accuracy when a split scores nothing). Where the generating distribution is known (cfl) a split carries
each sequence's least reachable loss: `min_loss` is their sum per output and `gap` = loss - min_loss, in
nats per symbol (the distance to the task's minimum cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from seqtool.data import cfl, formal, sequences
from seqtool.data.batching import shard
from seqtool.data.datasets import PreparedData
from seqtool.data.music import load_music
from seqtool.data.prepare import FORMAT, build_prepared, data_root, manifest_header, prepared_place
from seqtool.data.sequences import Examples
from seqtool.errors import SeqtoolError
from seqtool.models.base import VocabSizes
from seqtool.models.losses import objective_loss
from seqtool.recipe.schema import MAX_GENERATED, DataSpec, Seed, Spec
from seqtool.registry import TASKS
from seqtool.tasks.base import Task

SPLITS = ("train", "valid", "test")
ARRAYS = ("inputs", "targets", "weight", "scored", "offsets")
BOUND = "bound"  # optional: each sequence's least reachable loss
DEFAULT_BATCH = 64
EVAL_BATCH = 500
RECALLED = 0.9  # recall: a delay counts as recalled at this accuracy


class SyntheticSpec(Spec):
    """Sequence tasks generated from a seed for recurrent cells and norms (seqtool/data/sequences.py,
    formal.py), read by task synthetic."""

    kind: Literal["copy", "denoise", "adding", "recall", "tomita", "dyck", "arma", "cfl"] = Field(
        description="copy/denoise: recall K symbols after a delay; adding: sum two marked values; recall: x_{t-k} "
        "for each delay k; tomita/dyck: classify a string; arma: predict a simulated ARMA series; cfl: model the "
        "strings of a context-free language symbol by symbol"
    )
    train: int = Field(10000, gt=0, le=MAX_GENERATED, description=f"training sequences (at most {MAX_GENERATED:,}; "
                       "all are held in memory)")
    valid: int = Field(1000, gt=0, le=MAX_GENERATED, description=f"validation sequences (at most {MAX_GENERATED:,})")
    test: int = Field(1000, gt=0, le=MAX_GENERATED, description=f"test sequences (at most {MAX_GENERATED:,})")
    seed: Seed = Field(1, description="generator seed (independent of the training seed; 0 to 2^64-1)")
    length: int = Field(100, gt=0, description="copy/denoise: the delay T; adding/recall: sequence length; "
                        "arma: window length")
    count: int = Field(10, gt=0, description="copy/denoise: K, the symbols to recall")
    symbols: int = Field(8, ge=2, description="copy/denoise/recall: alphabet size; dyck: bracket kinds; cfl: symbol "
                         "types of the reversals, bracket kinds of dyck")
    delays: list[int] = Field([1, 2, 4, 8, 16, 32], min_length=1, description="recall: the delays asked for, "
                              "one output head each")
    grammar: int = Field(4, ge=1, le=7, description="tomita: grammar number (Tomita 1982)")
    train_lengths: tuple[int, int] = Field((1, 20), description="tomita/dyck/cfl: train and valid string lengths "
                                           "[lo, hi]")
    test_lengths: tuple[int, int] = Field((30, 60), description="tomita/dyck/cfl: test string lengths [lo, hi]")
    language: Literal["marked_reversal", "unmarked_reversal", "padded_reversal", "dyck"] = Field(
        "marked_reversal", description="cfl: w#w^R, ww^R, w a^m w^R or balanced brackets (seqtool/data/cfl.py; "
        "each string drawn from a PCFG given its length, the length uniform over the range's valid lengths)")
    mean_splits: float = Field(1.0, gt=0, description="cfl dyck: mean bracket splits (S -> S T at rate m/(m+1))")
    mean_nesting: float = Field(40.0, gt=1, description="cfl dyck: mean nesting depth")
    mean_content: float = Field(60.0, gt=0, description="cfl padded_reversal: mean length of w")
    mean_padding: float = Field(30.0, gt=0, description="cfl padded_reversal: mean padding length m")
    ar: list[float] = Field([0.1, 0.3], description="arma: AR coefficients phi_1..phi_p")
    ma: list[float] = Field([-0.4, -0.2], description="arma: MA coefficients theta_1..theta_q")
    noise: float = Field(2.0, gt=0, description="arma: standard deviation of the innovations")

    @model_validator(mode="after")
    def _fits(self) -> SyntheticSpec:
        if self.kind == "recall" and (min(self.delays) < 1 or max(self.delays) >= self.length):
            raise ValueError(f"delays: each between 1 and length - 1 ({self.length - 1})")
        for name in ("train_lengths", "test_lengths"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi or (self.kind == "dyck" and hi < 2):
                raise ValueError(f"{name}: [lo, hi] with 1 <= lo <= hi (dyck: hi >= 2), got [{lo}, {hi}]")
            if self.kind == "cfl" and not cfl.lengths_of(language_of(self), lo, hi):
                raise ValueError(f"{name}: {self.language} has no string with a length in [{lo}, {hi}]")
        return self


class MusicSpec(Spec):
    """Polyphonic music as piano rolls (seqtool/data/music.py), read by task music."""

    file: str = Field("music/jsb-chorales/jsb-chorales-quarter.json", description="JSON {train, valid, test} of "
                      "pieces, each a list of time steps, each a list of MIDI pitches (path under the data root)")
    lowest: int = Field(21, ge=0, le=127, description="lowest MIDI pitch of the roll (21: the 88 piano keys)")
    highest: int = Field(108, ge=0, le=127, description="highest MIDI pitch of the roll")

    @model_validator(mode="after")
    def _range(self) -> MusicSpec:
        if self.lowest > self.highest:
            raise ValueError(f"lowest ({self.lowest}) above highest ({self.highest})")
        return self


class SyntheticDataSpec(DataSpec):
    """The data section of task synthetic."""

    synthetic: SyntheticSpec = Field(description="the generated task (e.g. data.synthetic.kind=copy)")


class MusicDataSpec(DataSpec):
    """The data section of task music."""

    music: MusicSpec = Field(description="the piano rolls (e.g. data.music.file=...)")


def describe_io(spec) -> dict:
    """What a synthetic task's model reads and predicts (see the module notes)."""
    kind = spec.kind
    if kind in ("copy", "denoise"):  # blank, data symbols, marker in; blank and data symbols out
        return _io("symbols", spec.symbols + 2, "class", spec.symbols + 1)
    if kind == "recall":
        return _io("symbols", spec.symbols, "class", spec.symbols, heads=len(spec.delays))
    if kind in ("tomita", "dyck"):
        return _io("symbols", 2 * spec.symbols if kind == "dyck" else 2, "class", 2)
    if kind == "cfl":  # BOS in, EOS out: one more than the alphabet
        size = language_of(spec).alphabet + 1
        return _io("symbols", size, "class", size)
    return _io("features", 2 if kind == "adding" else 1, "real", 1)


def generate(spec, split: str) -> Examples:
    """One split of a synthetic task, from its own random stream."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split)])
    n, kind, T = getattr(spec, split), spec.kind, spec.length
    if kind in ("copy", "denoise"):
        make = sequences.copy_task if kind == "copy" else sequences.denoise_task
        return make(rng, n, delay=T, count=spec.count, symbols=spec.symbols)
    if kind == "adding":
        return sequences.adding_task(rng, n, length=T)
    if kind == "recall":
        return sequences.recall_task(rng, n, length=T, delays=spec.delays, symbols=spec.symbols)
    lengths = spec.test_lengths if split == "test" else spec.train_lengths
    if kind == "tomita":
        return formal.tomita_task(rng, n, grammar=spec.grammar, lengths=lengths)
    if kind == "dyck":
        return formal.dyck_task(rng, n, kinds=spec.symbols, lengths=lengths)
    if kind == "cfl":
        return cfl.lm_task(rng, n, language=language_of(spec), lengths=lengths)
    return sequences.arma_task(rng, n, length=T, ar=spec.ar, ma=spec.ma, noise=spec.noise)


def language_of(spec) -> cfl.Language:
    return cfl.build_language(spec.language, spec.symbols, mean_splits=spec.mean_splits,
                              mean_nesting=spec.mean_nesting, mean_content=spec.mean_content,
                              mean_padding=spec.mean_padding)


def _io(input_kind: str, input_size: int, output_kind: str, output_size: int, heads: int = 1) -> dict:
    return {"input": {"kind": input_kind, "size": input_size},
            "output": {"kind": output_kind, "size": output_size, "heads": heads}}


def music_io(spec) -> dict:
    pitches = spec.highest - spec.lowest + 1
    return _io("features", pitches, "multi", pitches)


def sizes_of(io: dict) -> VocabSizes:
    out = io["output"]
    return VocabSizes(io["input"]["size"], out["size"] * out["heads"])


def prepare_sequences(recipe, log=print, verify=None) -> Path:
    """Generate (synthetic) or read (music) every split into the prepared directory, unless current."""
    out, spec = prepared_place(recipe), getattr(recipe.data, recipe.task)  # data.synthetic or data.music
    fingerprint = {"format": FORMAT, "task": recipe.task, "settings": spec.model_dump(mode="json")}
    if recipe.task == "music":
        fingerprint["root"] = str(data_root())

    def build(stage: Path) -> dict:
        if recipe.task == "music":
            splits, io = load_music(data_root() / spec.file, spec.lowest, spec.highest), music_io(spec)
        else:
            splits, io = {name: generate(spec, name) for name in SPLITS}, describe_io(spec)
        for name, examples in splits.items():
            for array in ARRAYS if examples.bound is None else (*ARRAYS, BOUND):
                np.save(stage / f"{name}.{array}.npy", getattr(examples, array))
        counts = {k: {"sequences": len(v), "steps": int(v.offsets[-1])} for k, v in splits.items()}
        for k, v in splits.items():
            if v.bound is not None:
                counts[k]["min_loss"] = float(v.bound.sum() / v.weight.sum())
        return {**manifest_header(recipe, fingerprint), **io, "splits": counts}

    inputs = [data_root() / spec.file] if recipe.task == "music" else []
    manifest = build_prepared(out, fingerprint, build, log, inputs=inputs, verify=verify)
    if manifest is None:
        return out
    counts = manifest["splits"]
    shown = ", ".join(f"{k} {v['sequences']}" for k, v in counts.items())
    log(f"prepare: {shown} sequences -> {out}")
    return out


@dataclass
class SequenceBatch:
    inputs: torch.Tensor  # (B, T, F) float
    targets: torch.Tensor  # (B, T) or (B, T, D) class ids, or (B, T, O) float
    weight: torch.Tensor  # bool, like class targets or (B, T): outputs in the loss
    scored: torch.Tensor  # bool, like weight: outputs counted in accuracy
    mask: torch.Tensor  # (B, T) True on real steps
    ntokens: int  # outputs in the loss
    objective: str  # ce | bce | mse

    def to(self, device: torch.device) -> SequenceBatch:
        return type(self)(**{f.name: getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor)
                             else getattr(self, f.name) for f in fields(self)})


OBJECTIVES = {"class": "ce", "multi": "bce", "real": "mse"}


def collate(examples: Examples, index: np.ndarray, io: dict) -> SequenceBatch:
    """Right-padded batch of the examples at `index`; symbols become one-hot rows."""
    starts, lengths = examples.offsets[index], examples.lengths()[index]
    B, T = len(index), int(lengths.max())
    rows = np.full((B, T), -1, np.int64)
    for b, (start, length) in enumerate(zip(starts, lengths)):
        rows[b, :length] = np.arange(start, start + length)
    mask = rows >= 0
    take = np.where(mask, rows, 0)

    def gather(array: np.ndarray, fill) -> np.ndarray:
        out = array[take]
        out[~mask] = fill
        return out

    if io["input"]["kind"] == "symbols":
        inputs = np.eye(io["input"]["size"], dtype=np.float32)[examples.inputs[take]] * mask[..., None]
    else:
        inputs = gather(examples.inputs, 0).astype(np.float32)
    weight, scored = gather(examples.weight, False), gather(examples.scored, False)
    kind = io["output"]["kind"]
    targets = gather(examples.targets, 0)
    targets = targets.astype(np.int64) if kind == "class" else targets.astype(np.float32)
    return SequenceBatch(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(weight),
                         torch.from_numpy(scored), torch.from_numpy(mask), int(weight.sum()), OBJECTIVES[kind])


class SequenceTask(Task):
    """Shared by `synthetic` and `music`: batches of whole sequences, evaluation by loss and accuracy."""

    metrics = ("loss", "accuracy")

    def __init__(self, recipe, directory, device, *, rank: int = 0, world: int = 1):
        self.recipe, self.directory, self.device = recipe, Path(directory), device
        self.rank, self.world = rank, world
        self.data = PreparedData(self.directory)
        self.vocabs = None  # no tokenizer: inputs are symbols or features
        self.io = {k: self.data.manifest[k] for k in ("input", "output")}
        self._splits: dict[str, Examples] = {}

    @classmethod
    def prepare(cls, recipe, log, verify=None) -> Path:
        return prepare_sequences(recipe, log, verify)

    def sizes(self) -> VocabSizes:
        return sizes_of(self.io)

    def split(self, name: str) -> Examples:
        if name not in self._splits:
            if not self.data.has(name):
                have = ", ".join(self.data.manifest["splits"])
                raise SeqtoolError(f"{self.directory}: no {name!r} split (have: {have})")
            arrays = {a: np.load(self.directory / f"{name}.{a}.npy", mmap_mode="r") for a in ARRAYS}
            bound = self.directory / f"{name}.{BOUND}.npy"
            self._splits[name] = Examples(**arrays, bound=np.load(bound) if bound.exists() else None)
        return self._splits[name]

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """Training sequences shuffled by (seed, epoch) in batches of train.batch_size; a short last batch
        is dropped (when there is a full one) so that batch statistics always see the same batch size."""
        size = self.recipe.train.batch_size or DEFAULT_BATCH
        order = np.random.default_rng([self.recipe.seed, epoch]).permutation(len(self.split("train")))
        full = len(order) // size * size or len(order)
        return shard([order[i : i + size] for i in range(0, full, size)], self.rank, self.world)

    def batch(self, item: np.ndarray) -> SequenceBatch:
        return collate(self.split("train"), item, self.io).to(self.device)

    def evaluate(self, model, name: str, settings=None, limit: int | None = None) -> dict[str, float]:
        split = self.split(name)
        count = len(split) if limit is None else min(limit, len(split))
        total, units, right, scored = 0.0, 0, 0.0, 0.0
        with torch.inference_mode():
            for start in range(0, count, EVAL_BATCH):
                batch = collate(split, np.arange(start, min(start + EVAL_BATCH, count)), self.io).to(self.device)
                outputs = model.outputs(batch)
                total += float(objective_loss(outputs, batch)[1])
                units += batch.ntokens
                if batch.objective == "ce":
                    hits, counts = correct(outputs, batch)
                    right, scored = right + hits, scored + counts
        results = {"loss": total / max(units, 1)}
        if split.bound is not None:
            results["min_loss"] = float(split.bound[:count].sum() / max(units, 1))
            results["gap"] = results["loss"] - results["min_loss"]
        if self.io["output"]["kind"] == "class" and np.sum(scored):
            results.update(self.accuracies(right, scored))
        return {**results, **model.describe()}

    def accuracies(self, right, scored) -> dict[str, float]:
        results = {"accuracy": float(np.sum(right) / np.sum(scored))}
        spec = self.recipe.data.synthetic  # only synthetic tasks have classes
        if spec.kind == "recall":
            per = np.asarray(right) / np.maximum(np.asarray(scored), 1)
            results.update({f"accuracy_k{k}": float(a) for k, a in zip(spec.delays, per)})
            results["max_delay"] = float(max([k for k, a in zip(spec.delays, per) if a >= RECALLED], default=0))
        return results

    def validate(self, model) -> dict[str, float]:
        return self.evaluate(model, "valid")


def correct(outputs: torch.Tensor, batch: SequenceBatch) -> tuple[np.ndarray, np.ndarray]:
    """Right predictions and scored outputs per head (arrays of length D) of a class batch."""
    heads = batch.targets.size(-1) if batch.targets.dim() == 3 else 1
    logits = outputs.view(*batch.targets.shape[:2], heads, -1)
    targets = batch.targets.view(*batch.targets.shape[:2], heads)
    scored = batch.scored.view_as(targets)
    hits = ((logits.argmax(-1) == targets) & scored).sum((0, 1))
    return hits.cpu().numpy().astype(float), scored.sum((0, 1)).cpu().numpy().astype(float)


@TASKS.register("synthetic", config=SyntheticDataSpec)
class SyntheticTask(SequenceTask):
    @classmethod
    def expected_sizes(cls, recipe) -> VocabSizes:
        """The model's sizes for a recipe, known before any data is generated."""
        return sizes_of(describe_io(recipe.data.synthetic))

    @classmethod
    def check(cls, recipe) -> list[str]:
        spec = recipe.data.synthetic
        if recipe.train.early_stopping.metric != "accuracy":
            return []
        if spec.kind in ("adding", "arma"):
            return [f"train.early_stopping.metric: data.synthetic.kind {spec.kind!r} is a regression (use loss)"]
        if spec.kind == "cfl" and spec.language != "marked_reversal":
            return [f"train.early_stopping.metric: {spec.language} has no symbol that follows from its prefix, "
                    "so no accuracy (use loss)"]
        return []


@TASKS.register("music", config=MusicDataSpec)
class MusicTask(SequenceTask):
    metrics = ("loss",)

    @classmethod
    def expected_sizes(cls, recipe) -> VocabSizes:
        return sizes_of(music_io(recipe.data.music))

