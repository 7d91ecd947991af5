"""Recurrent layers built from registered cells: a stack over time, its bidirectional form and the
encoder of the recurrent translation models."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtool.models.layers import Dropout
from seqtool.models.recurrent.cells import build_cell, cell_config, norm_config, uses_fused

STEP_KERNELS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn": torch.rnn_tanh_cell}


class Recurrent(nn.Module):
    """A stack of recurrent layers, batch-first in and out, with dropout between layers (Zaremba et al.
    2014: not on the recurrent connections). `cell` and `norm` name registered components
    (seqtool/models/recurrent/cells.py, norms.py), as strings or configs.

    Plain lstm/gru/rnn without a norm run on torch's fused kernels; their state is a tuple of
    (B, layers, H) tensors, (h, c) for LSTM and (h,) otherwise, batch-first so that search can reorder
    it like any other state. Other cells run a time loop (cells.CellLayer); their state is the core
    tensors (h[, c]) as (B, layers, H) followed by one tuple of per-layer extras (time index, norm
    memories). A state given without the extras (e.g. from `initial_state`) starts them fresh.
    A single step (decoding, input feeding) runs torch's cell kernels on the same weights. Inputs are
    right-padded and never packed: packing sends torch's CPU LSTM down a per-timestep path
    several times slower, and positions before the padding do not depend on it; `mask` (B, T) keeps
    padded rows out of batch statistics.
    """

    def __init__(self, cell, input_dim: int, hidden_dim: int, layers: int = 1, *, dropout: float = 0.0,
                 norm="none"):
        super().__init__()
        cell_cfg, norm_cfg = cell_config(cell), norm_config(norm)
        self.cell = cell_cfg.name
        self.fused = uses_fused(cell_cfg, norm_cfg)
        sizes = [(input_dim if i == 0 else hidden_dim, hidden_dim) for i in range(layers)]
        if self.fused:
            kinds = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
            self.layers = nn.ModuleList(kinds[self.cell](i, h, batch_first=True) for i, h in sizes)
            self.core = 2 if self.cell == "lstm" else 1
        else:
            self.layers = nn.ModuleList(build_cell(cell_cfg, norm_cfg, i, h) for i, h in sizes)
            self.core = self.layers[0].core
        self.drop = Dropout(dropout)

    def initial_state(self, hidden: torch.Tensor) -> tuple:
        """A start state from hidden states (B, layers, H); memory cells (if any) start at zero."""
        return (hidden, torch.zeros_like(hidden)) if self.core == 2 else (hidden,)

    def forward(self, x: torch.Tensor, state: tuple | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
        """x (B, T, I) -> outputs (B, T, H), final state (after all T steps, padding included)."""
        if not self.fused:
            return self._loop(x, state, mask)
        if x.size(1) == 1 and isinstance(self.layers[0], nn.RNNBase):  # not int8's quantized layers: their own kernel
            return self._one_step(x, state)
        finals = []
        for i, layer in enumerate(self.layers):
            hidden = None
            if state is not None:
                hidden = tuple(s[:, i].unsqueeze(0).contiguous() for s in state)
                hidden = hidden if self.cell == "lstm" else hidden[0]
            x, hidden = layer(self.drop(x) if i else x, hidden)
            finals.append(hidden if self.cell == "lstm" else (hidden,))
        return x, _batch_first(finals)

    def _one_step(self, x: torch.Tensor, state: tuple | None) -> tuple[torch.Tensor, tuple]:
        """One time step through torch's cell kernels on the layers' own weights: the fused layer's
        per-call set-up makes a one-step call slower to train through (bench/README.md)."""
        kernel = STEP_KERNELS[self.cell]
        h, finals = x[:, 0], []
        for i, layer in enumerate(self.layers):
            prev = (tuple(s[:, i] for s in state) if state is not None
                    else (h.new_zeros(h.size(0), layer.hidden_size),) * self.core)
            weights = (layer.weight_ih_l0, layer.weight_hh_l0, layer.bias_ih_l0, layer.bias_hh_l0)
            inp = self.drop(h) if i else h
            new = kernel(inp, prev, *weights) if self.core == 2 else (kernel(inp, prev[0], *weights),)
            finals.append(new)
            h = new[0]
        return h.unsqueeze(1), _stack_layers(finals)

    def to_lengths(self, x: torch.Tensor, lengths: torch.Tensor,
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
        """x (B, T, I) -> outputs (B, T, H) and each row's core state (h[, c], each (B, layers, H)) after
        its first lengths[b] steps (at least one). Time runs in pieces ending at each distinct length, so
        a source-bucketed batch (a few lengths) stays on the fused kernel without packing."""
        steps = lengths.clamp(1, x.size(1))
        if self.fused and torch.jit.is_tracing():
            return self._packed(x, steps)
        outputs, state, start, finals = [], None, 0, None
        for end in sorted({*steps.tolist(), x.size(1)}):
            out, state = self(x[:, start:end], state, None if mask is None else mask[:, start:end])
            outputs.append(out)
            here = (steps == end).view(-1, 1, 1)
            core = state[: self.core]
            finals = core if finals is None else tuple(torch.where(here, s, f) for s, f in zip(core, finals))
            start = end
        return torch.cat(outputs, 1), finals

    def _packed(self, x: torch.Tensor, steps: torch.Tensor) -> tuple[torch.Tensor, tuple]:
        """to_lengths for export: a traced graph would freeze the pieces to the example's lengths; packed
        input gives the fused kernel (and ONNX's LSTM) each row's length instead."""
        finals = []
        for i, layer in enumerate(self.layers):
            packed = pack_padded_sequence(self.drop(x) if i else x, steps.cpu(), batch_first=True,
                                          enforce_sorted=False)
            out, hidden = layer(packed)
            x = pad_packed_sequence(out, batch_first=True, total_length=x.size(1))[0]
            finals.append(hidden if self.cell == "lstm" else (hidden,))
        return x, _batch_first(finals)

    def _loop(self, x: torch.Tensor, state: tuple | None, mask: torch.Tensor | None) -> tuple[torch.Tensor, tuple]:
        finals = []
        for i, layer in enumerate(self.layers):
            layer_state = None
            if state is not None:
                extras = state[self.core][i] if len(state) > self.core else layer.start(x.size(0), x)[self.core:]
                layer_state = (*(s[:, i] for s in state[: self.core]), *extras)
            x, layer_state = layer(self.drop(x) if i else x, layer_state, mask)
            finals.append(layer_state)
        core = _stack_layers([f[: self.core] for f in finals])
        return x, (*core, tuple(f[self.core:] for f in finals))


def _stack_layers(finals: list[tuple]) -> tuple:
    """Each layer's state parts, each (B, H) -> one (B, layers, H) tensor per part."""
    return tuple(torch.stack(parts, dim=1) for parts in zip(*finals))


def _batch_first(finals: list[tuple]) -> tuple:
    """Each fused layer's final (h[, c]), each (1, B, H) -> one (B, layers, H) tensor per part."""
    return tuple(torch.cat([f[k] for f in finals], 0).transpose(0, 1) for k in range(len(finals[0])))


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, steps) True on the first lengths[b] steps of each row."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row's first lengths[b] steps, leaving the padding after them in place (B, T, ...)."""
    T = x.size(1)
    steps = torch.arange(T, device=x.device).unsqueeze(0)
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    return x.gather(1, index.view(*index.shape, *[1] * (x.dim() - 2)).expand_as(x))


class BiRecurrent(nn.Module):
    """A bidirectional recurrent layer over right-padded input (Schuster and Paliwal 1997).

    The backward direction reads each sequence reversed within its length, so padding never enters
    a real position's state and both directions keep torch's fused kernel. Outputs concatenate the
    directions; `final` is each direction's state after reading its whole sequence, concatenated.
    """

    def __init__(self, cell, input_dim: int, hidden_dim: int, *, norm="none"):
        super().__init__()
        self.fwd = Recurrent(cell, input_dim, hidden_dim, norm=norm)
        self.bwd = Recurrent(cell, input_dim, hidden_dim, norm=norm)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, full_state: bool = False) -> tuple[torch.Tensor, tuple]:
        """x (B, T, I) -> outputs (B, T, 2H), final (h,) or with full_state the whole core state (h[, c]),
        each (B, 2H)."""
        mask = None if self.fwd.fused else length_mask(lengths, x.size(1))
        if full_state:
            fwd, fwd_final = self.fwd.to_lengths(x, lengths, mask)
            bwd, bwd_final = self.bwd.to_lengths(reverse_padded(x, lengths), lengths, mask)
            final = tuple(torch.cat([f[:, 0], b[:, 0]], dim=-1) for f, b in zip(fwd_final, bwd_final))
            return torch.cat([fwd, reverse_padded(bwd, lengths)], dim=-1), final
        fwd = self.fwd(x, mask=mask)[0]
        bwd = reverse_padded(self.bwd(reverse_padded(x, lengths), mask=mask)[0], lengths)
        last = (lengths - 1).clamp(min=0)
        final = torch.cat([fwd[torch.arange(x.size(0), device=x.device), last], bwd[:, 0]], dim=-1)
        return torch.cat([fwd, bwd], dim=-1), (final,)


class RecurrentEncoder(nn.Module):
    """A stack of recurrent layers over right-padded input, the first `bidirectional_layers` of them
    bidirectional (H/2 per direction), with dropout between layers and optional residual
    connections x_{l+1} = f_l(x_l) + x_l from layer `residual_from` (1-based) up, as in GNMT.

    Returns the top layer's outputs (B, T, H) and each layer's final state read at each row's last
    real position: (h,), or with full_state the whole core state (h[, c]), each (B, layers, H).
    """

    def __init__(self, cell, input_dim: int, hidden_dim: int, layers: int, *, bidirectional_layers: int = 0,
                 dropout: float = 0.0, residual_from: int | None = None, norm="none"):
        super().__init__()
        if bidirectional_layers and hidden_dim % 2:
            raise ValueError("bidirectional layers need an even hidden size")
        self.layers = nn.ModuleList(
            BiRecurrent(cell, input_dim if i == 0 else hidden_dim, hidden_dim // 2, norm=norm)
            if i < bidirectional_layers else Recurrent(cell, input_dim if i == 0 else hidden_dim, hidden_dim, norm=norm)
            for i in range(layers)
        )
        self.drop = Dropout(dropout)
        self.residual_from = residual_from

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                full_state: bool = False) -> tuple[torch.Tensor, tuple]:
        rows = torch.arange(x.size(0), device=x.device)
        last = (lengths - 1).clamp(min=0)
        finals = []
        for number, layer in enumerate(self.layers, start=1):
            inp = self.drop(x) if number > 1 else x
            if isinstance(layer, BiRecurrent):
                out, final = layer(inp, lengths, full_state)
            else:
                mask = None if layer.fused else length_mask(lengths, x.size(1))
                if full_state:
                    out, final = layer.to_lengths(inp, lengths, mask)
                    final = tuple(f[:, 0] for f in final)
                else:
                    out = layer(inp, mask=mask)[0]
                    final = (out[rows, last],)
            if self.residual_from is not None and number >= self.residual_from:
                out = out + x
            finals.append(final)
            x = out
        return x, _stack_layers(finals)
