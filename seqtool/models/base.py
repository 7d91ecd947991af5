"""The contracts every model keeps: a loss on a batch for the trainer, and encode/start/step with an
explicit, reorderable state for search. Search and training never look inside a model."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import NamedTuple

import torch
from torch import nn

from seqtool.models.losses import output_loss


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


class Seq2SeqModel(nn.Module):
    """An encoder-decoder. Subclasses implement forward (teacher forcing), encode, start and step,
    and own an output layer `self.out` (nn.Linear) from features to vocabulary logits."""

    out: nn.Linear

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Features (B, T, D) before the output layer, for every target position given the gold prefix."""
        raise NotImplementedError

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Rows:
        raise NotImplementedError

    def start(self, enc: Rows) -> Rows:
        raise NotImplementedError

    def step(self, prev: torch.Tensor, state: Rows, enc: Rows) -> StepOut:
        """One decoding step for (N,) previous tokens."""
        raise NotImplementedError

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        features = self(batch.src, batch.src_mask, batch.tgt_in)
        loss, nll = output_loss(features, batch.tgt_out, self.out, label_smoothing)
        return LossOut(loss, nll, batch.ntokens)


class LanguageModel(nn.Module):
    """A left-to-right LM. Subclasses implement forward(inputs, state) -> (features, state) and own
    an output layer `self.out`."""

    out: nn.Linear

    def forward(self, inputs: torch.Tensor, state=None):
        raise NotImplementedError

    def loss(self, batch, label_smoothing: float = 0.0, state=None) -> LossOut:
        features, state = self(batch.inputs, None if batch.first else state)
        loss, nll = output_loss(features, batch.targets, self.out, label_smoothing)
        return LossOut(loss, nll, batch.ntokens, detach(state))


def detach(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value.detach()
    return type(value)(detach(v) for v in value)
