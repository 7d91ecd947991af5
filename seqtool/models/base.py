"""The contracts models keep, written down: search, the trainer and the tasks know a model only
through these, never by looking inside it.

    Model              every model: `loss(batch, label_smoothing, state) -> LossOut` for the trainer,
                       and three hooks with neutral defaults: `schedule_clock(step)` (where the trainer
                       reads its learning-rate schedule), `validated(metrics)` (after each
                       validation: a per-validation switch such as MemN2N's linear start) and
                       `training_report()` (numbers logged with each training log line, such as a
                       DEQ's solver iterations and residual)
    Seq2SeqModel       translation: teacher-forced `forward(src, src_mask, tgt_in)` and
                       `encode / start / step` with an explicit, reorderable state for search
    LanguageModel      `forward(inputs, state) -> (features, state)`; state carried between blocks;
                       `target_log_probs(features, targets)` for scoring given text and
                       `predict(features)`, the most likely next tokens
    ClassifierModel    one answer per example (bAbI QA): `forward(story, query) -> (logits, extra)`
    SequenceClassifier one label per sequence (task classify): `forward(tokens, mask) -> logits`
    SequenceModel      an output at every step (sequence tasks): `outputs(batch)` and `describe()`
    FiniteStateModel   a model that may be a finite automaton in evaluation (a mixin beside the above):
                       `is_automaton()`, `start_state()`, `next_states(states)`, `state_vector(id)`,
                       `label_states(states)`, all that `seqtool automaton` reads it through

Each is an abstract base class: a subclass that misses a method fails when it is built, not mid-run.
A new family subclasses the one its task expects (seqtool/tasks/*.py says which)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
from torch import nn

from seqtool.models.adaptive import adaptive_loss
from seqtool.models.losses import objective_loss, output_loss, target_log_probs
from seqtool.specials import PAD


@dataclass
class VocabSizes:
    src: int
    tgt: int


def select_rows(value, index: torch.Tensor):
    """Pick rows (dim 0) of every tensor inside a state: tensors, tuples, lists, Rows, None."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index)
    if isinstance(value, Rows):
        return value.reorder(index)
    return type(value)(select_rows(v, index) for v in value)


@dataclass
class Rows:
    """A dataclass of batch-first tensors (or nested tuples of them) whose rows move together.

    Decoder states and encoder outputs subclass it, so beam search can reorder hypotheses and drop
    finished sentences with one call, whatever the model keeps.
    """

    def reorder(self, index: torch.Tensor):
        return replace(self, **{f.name: select_rows(getattr(self, f.name), index) for f in fields(self)})


class StepOut(NamedTuple):
    log_probs: torch.Tensor  # (N, V) next-token log-probabilities
    attn: torch.Tensor | None  # (N, S) attention over source positions, None without attention
    state: Rows


class LossOut(NamedTuple):
    loss: torch.Tensor  # sum over target tokens of the training objective (label smoothing included)
    nll: torch.Tensor  # sum of negative log-likelihoods, detached, for reporting
    ntokens: int
    state: object = None  # recurrent state carried to the next block (LMs), detached


class Model(nn.Module, ABC):
    """What the trainer asks of every model."""

    @abstractmethod
    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        """The training objective summed over a task's batch; `state` is what the previous batch returned."""

    def schedule_clock(self, step: int) -> tuple[int, float]:
        """The step at which the trainer reads its learning-rate schedule, and a multiplier for it."""
        return step, 1.0

    def validated(self, metrics: dict[str, float]) -> dict[str, float]:
        """Take the metrics of a validation (rank 0 only); returns values to report with them."""
        return {}

    def training_report(self) -> dict[str, float]:
        """Numbers about the latest training step to log beside the training loss (rank 0, at each
        training log line); none by default. They describe that step, not a window of steps, so a
        resumed run logs what the uninterrupted one did."""
        return {}


class Seq2SeqModel(Model):
    """An encoder-decoder. Subclasses implement forward (teacher forcing), encode, start and step,
    and own an output layer `self.out` (nn.Linear) from features to vocabulary logits."""

    out: nn.Linear

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) before the output layer, for every target position given the gold prefix
        (what `loss` trains; a model that is only searched, such as a test's probability table, may omit it)."""
        raise NotImplementedError

    @abstractmethod
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Rows:
        """The encoder's output for (B, S) source ids, as reorderable rows."""

    @abstractmethod
    def start(self, enc: Rows) -> Rows:
        """The decoder state before the first step."""

    @abstractmethod
    def step(self, prev: torch.Tensor, state: Rows, enc: Rows) -> StepOut:
        """One decoding step for (N,) previous tokens."""

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        features = self(batch.src, batch.src_mask, batch.tgt_in)
        loss, nll = output_loss(features, batch.tgt_out, self.out, label_smoothing)
        return LossOut(loss, nll, batch.ntokens)


class LanguageModel(Model):
    """A left-to-right LM. Subclasses implement forward(inputs, state) -> (features, state) and own
    an output layer: `self.out` (nn.Linear, a full softmax) or `self.adaptive` (an adaptive softmax,
    seqtool/models/adaptive.py; label smoothing does not apply to it)."""

    out: nn.Linear
    adaptive: nn.AdaptiveLogSoftmaxWithLoss  # where set; not a class attribute, which would hide the module

    @abstractmethod
    def forward(self, inputs: torch.Tensor, state=None):
        """Features (B, T, D) before the output layer, and the state after the block."""

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """(B, T) the most likely next token at each position of forward's features."""
        adaptive = getattr(self, "adaptive", None)
        if adaptive is not None:
            return adaptive.predict(features.flatten(0, 1).float()).view(features.shape[:-1])
        return self.out(features).argmax(-1)

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        features, state = self(batch.inputs, None if batch.first else state)
        adaptive = getattr(self, "adaptive", None)
        if adaptive is not None:
            loss, nll = adaptive_loss(adaptive, features, batch.targets)
        else:
            loss, nll = output_loss(features, batch.targets, self.out, label_smoothing)
        return LossOut(loss, nll, batch.ntokens, detach(state))

    def log_probs(self, features: torch.Tensor) -> torch.Tensor:
        """(N, V) next-token log-probabilities (float32) for features (N, D)."""
        adaptive = getattr(self, "adaptive", None)
        if adaptive is not None:
            return adaptive.log_prob(features.float())
        return torch.log_softmax(self.out(features).float(), -1)

    def target_log_probs(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(y_t | y_<t) of each target (B, T) from forward's features, 0 at PAD."""
        adaptive = getattr(self, "adaptive", None)
        if adaptive is None:
            return target_log_probs(features, targets, self.out)
        keep = targets != PAD
        result = torch.zeros(targets.shape, device=features.device)
        result[keep] = adaptive(features[keep].float(), targets[keep]).output
        return result


def detach(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach()
    return type(value)(detach(v) for v in value)


class ClassifierModel(Model):
    """One answer per example (task qa): logits over the answers and what the model attended to."""

    @abstractmethod
    def forward(self, story: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, V) answer logits and (B, hops, M) attention over the memories."""


class SequenceClassifier(Model):
    """One label per whole sequence (task classify: parity/XOR of marked positions, ListOps, text).

    The batch has `tokens` (B, T) ids, `mask` (B, T) bool (True at real positions, padding at the end)
    and `labels` (B,) class ids; the default loss is cross-entropy over the labels."""

    @abstractmethod
    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, C) class logits for (B, T) token ids."""

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        logits = self(batch.tokens, batch.mask)
        loss = nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum",
                                           label_smoothing=label_smoothing)
        nll = nn.functional.cross_entropy(logits.float().detach(), batch.labels, reduction="sum")
        return LossOut(loss, nll, int(batch.labels.numel()))


class SequenceModel(Model):
    """An output at every step of an input sequence (tasks synthetic and music); the default loss is the
    objective the batch names (cross-entropy, Bernoulli NLL or squared error) over its weighted outputs."""

    @abstractmethod
    def outputs(self, batch) -> torch.Tensor:
        """(B, T, O) outputs for a SequenceBatch: logits per class head, Bernoulli logits or real values."""

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        loss, nll = objective_loss(self.outputs(batch), batch, label_smoothing)
        return LossOut(loss, nll, batch.ntokens)

    def describe(self) -> dict[str, float]:
        """Model-specific numbers reported with the evaluation metrics (none by default)."""
        return {}


class FiniteStateModel(ABC):
    """A model over one-hot symbols whose evaluation mode may be a deterministic finite automaton: a
    set of state ids, each with a state vector, and a next state that depends on the state and the
    symbol only (a state-regularized GRU). Callers switch to evaluation mode and disable gradients."""

    @abstractmethod
    def is_automaton(self) -> bool:
        """Whether evaluation mode is a finite automaton (the other methods hold only then)."""

    @abstractmethod
    def start_state(self) -> torch.Tensor:
        """(H,) the state vector before the first symbol (need not be one of the state ids' vectors)."""

    @abstractmethod
    def next_states(self, states: torch.Tensor) -> torch.Tensor:
        """(N, H) state vectors -> (N, symbols) the state id after reading each symbol from each state."""

    @abstractmethod
    def state_vector(self, state: int) -> torch.Tensor:
        """(H,) the vector of a state id that next_states returned."""

    @abstractmethod
    def label_states(self, states: torch.Tensor) -> torch.Tensor:
        """(N, H) state vectors -> (N,) the class the model outputs in each state."""
