"""A recurrent sequence model for the `synthetic` and `music` tasks (seqtool/tasks/sequence.py): the
same recurrent stack as rnnlm (any registered cell and norm) between a linear input projection and a
linear output layer, with the objective the task's batch names.

    e_t = W_e x_t (or x_t itself without embed_dim);  h_t = RNN(e_t, h_{t-1});  o_t = W_o h_t + b_o
    ce   softmax cross-entropy per head (o_t split into `heads` blocks of classes)
    bce  sum over units of Bernoulli NLL, sigma(o_t) the probabilities (polyphonic music)
    mse  squared error (adding, ARMA)
The model's sizes come from the task: sizes.src is the input width (one-hot symbols or features),
sizes.tgt the outputs per step. Without the output layer (output_layer: false) the top recurrent layer's
outputs are the predictions themselves, so an ARMA cell's coefficients read as the fitted model's.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.models.base import FiniteStateModel, SequenceModel, VocabSizes
from seqtool.models.layers import Dropout
from seqtool.models.recurrent.layers import Recurrent
from seqtool.models.recurrent.rnn import RecurrentConfig
from seqtool.models.recurrent.state_reg import StateRegularizedCell
from seqtool.registry import MODELS


class RNNSequenceConfig(RecurrentConfig):
    arch: Literal["rnn_sequence"] = "rnn_sequence"
    tasks: ClassVar = ("synthetic", "music")
    embed_dim: int | None = Field(None, gt=0, description="project each input to this size first (null: the "
                                  "one-hot symbols or features go straight into the first layer)")
    hidden_dim: int = Field(128, gt=0, description="units per recurrent layer")
    layers: int = Field(1, ge=1, description="recurrent layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="on inputs of layers above the first and on outputs")
    output_layer: bool = Field(True, description="a linear layer from the top layer to the outputs (false: the "
                               "top layer's outputs are the predictions; needs hidden_dim = outputs per step)")


class RNNSequence(SequenceModel, FiniteStateModel):
    def __init__(self, cfg: RNNSequenceConfig, sizes: VocabSizes):
        super().__init__()
        if not cfg.output_layer and cfg.hidden_dim != sizes.tgt:
            raise SeqtoolError(f"model.output_layer: false needs model.hidden_dim = {sizes.tgt} (the task's outputs "
                               f"per step), got {cfg.hidden_dim}")
        self.embed = nn.Linear(sizes.src, cfg.embed_dim) if cfg.embed_dim else None
        try:
            self.rnn = Recurrent(cfg.cell, cfg.embed_dim or sizes.src, cfg.hidden_dim, cfg.layers,
                                 dropout=cfg.dropout, norm=cfg.norm)
        except ValueError as err:
            raise SeqtoolError(f"model.cell: {err}") from None
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden_dim, sizes.tgt) if cfg.output_layer else None

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """inputs (B, T, F), mask (B, T) -> top-layer features (B, T, H)."""
        x = self.embed(inputs) if self.embed is not None else inputs
        return self.drop(self.rnn(x, mask=mask)[0])

    def outputs(self, batch) -> torch.Tensor:
        """(B, T, O): logits (ce, bce) or values (mse)."""
        features = self(batch.inputs, batch.mask)
        return self.out(features) if self.out is not None else features

    def describe(self) -> dict[str, float]:
        """What the cells report about themselves (ARMA coefficients, NC-GRU orthogonality error)."""
        layers = self.rnn.layers
        prefix = [f"layer{i + 1}_" if len(layers) > 1 else "" for i in range(len(layers))]
        return {p + k: v for p, layer in zip(prefix, layers) if hasattr(layer, "describe")
                for k, v in layer.describe().items()}

    # FiniteStateModel: with one finite SR cell (sr_gru, hard_eval) the states are its centroids
    def is_automaton(self) -> bool:
        layers = self.rnn.layers
        return len(layers) == 1 and isinstance(layers[0], StateRegularizedCell) and layers[0].finite

    def start_state(self) -> torch.Tensor:
        cell = self.rnn.layers[0]
        return torch.zeros(cell.hidden_dim, device=cell.centroids.device)

    def next_states(self, states: torch.Tensor) -> torch.Tensor:
        cell = self.rnn.layers[0]
        symbols = self.embed.in_features if self.embed is not None else cell.input_dim
        x = torch.eye(symbols, device=states.device).repeat(len(states), 1).unsqueeze(1)  # (N * symbols, 1, F)
        x = self.embed(x) if self.embed is not None else x
        h = states.repeat_interleave(symbols, 0).unsqueeze(1)  # (N * symbols, layers = 1, H)
        return cell.assign(self.rnn(x, self.rnn.initial_state(h))[0][:, 0]).view(len(states), symbols)

    def state_vector(self, state: int) -> torch.Tensor:
        return self.rnn.layers[0].centroids[state]

    def label_states(self, states: torch.Tensor) -> torch.Tensor:
        return (self.out(states) if self.out is not None else states).argmax(-1)


@MODELS.register("rnn_sequence", config=RNNSequenceConfig)
def build_rnn_sequence(cfg: RNNSequenceConfig, sizes: VocabSizes) -> RNNSequence:
    return RNNSequence(cfg, sizes)
