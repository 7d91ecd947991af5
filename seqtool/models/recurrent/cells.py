"""Recurrent cells, registered by name for `cell:` in every recurrent model (layers.Recurrent runs them).

Plain `rnn`, `gru` and `lstm` without a norm run on torch's fused kernels (nn.RNN/GRU/LSTM). Every
other cell, and these three with a norm (seqtool/models/recurrent/norms.py), is a `CellLayer`: the input side of
all steps is computed at once (one matmul, and the input-site norm over the whole sequence), then a
Python loop runs `step`, which only does the recurrent matmul and elementwise work. The time loop is
measured against the fused LSTM in bench/cells.py.

Cells (Chung et al. 2014 compare tanh-RNN, LSTM and GRU; the torch forms are kept as the defaults):
    rnn            h_t = tanh(N_x(W x_t) + N_h(U h_{t-1}) + b)
    gru            torch's form: r, z = sigma(...), n = tanh(N_x(W_n x) + r * (N_h(U_n h) + b_hn)),
                   h_t = (1 - z) n + z h_{t-1}   (reset applied after U, z keeps the old state)
    gru_chung      Cho et al. 2014 / Chung et al. 2014: z, r = sigma(W x + U h), h~ = tanh(W x + U (r * h)),
                   h_t = (1 - z) h_{t-1} + z h~
    lstm           torch's form (gates i, f, g, o): c_t = f c_{t-1} + i g, h_t = o tanh(N_c(c_t)); with `clip: δ`
                   (GNMT's accumulator clipping) c_t and h_t are clamped to [-δ, δ] at every step
    lstm_peephole  Graves 2013 (the LSTM of Chung et al. 2014): diagonal peepholes, i and f see c_{t-1},
                   o sees c_t
Gates are normalized jointly per site: N_x over all gates of W x, N_h over all gates of U h, N_c on c_t
(Cooijmans et al. 2017; Ba et al. 2016; the ATN code). Biases are added after the norms, so the x and h
sites have a gain only. Other cells: orthogonal.py (ncgru), arma.py (arma), state_reg.py (sr_gru, sr_lstm).

The state of one layer is a tuple: the core tensors (h, or h and c: (B, H) each), the time index (B,)
and the norms' memories (one tuple per site), so that step-wise decoding continues exactly where a
full forward pass would be.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from seqtool.models.components import ComponentConfig, parse_component
from seqtool.models.recurrent.norms import NORMS, SiteNorm, build_norm
from seqtool.registry import Registry

CELLS = Registry("cell")


class CellConfig(ComponentConfig):
    takes_norm: ClassVar[bool] = True  # whether `norm:` applies to this cell
    fused_kind: ClassVar[str | None] = None  # the torch module that runs it when it has no norm


class FusableConfig(CellConfig):
    fused: bool = Field(True, description="without a norm, run torch's fused kernel (false: the Python time "
                        "loop with the same equations, for comparison)")


def cell_config(value) -> CellConfig:
    return parse_component(CELLS, value)


def norm_config(value) -> ComponentConfig:
    return parse_component(NORMS, value)


def compatibility_problem(cell: CellConfig, norm: ComponentConfig) -> str | None:
    """Why a cell and a norm cannot go together (None when they can)."""
    if norm.name != "none" and not type(cell).takes_norm:
        return f"cell {cell.name!r} takes no norm (got norm {norm.name!r}); use norm: none"
    return None


def uses_fused(cell: CellConfig, norm: ComponentConfig) -> bool:
    clipped = getattr(cell, "clip", None) is not None  # the fused kernel hides c_t
    return type(cell).fused_kind is not None and cell.fused and norm.name == "none" and not clipped


class CellLayer(nn.Module):
    """One recurrent layer over (B, T, I) inputs: `project` all steps, then a time loop over `step`.

    Subclasses set `core` (1: h; 2: h and c), `sites` (norm site names, in state order) and implement
    `project(x, t0, memories, mask) -> (inputs (B, T, G), memories)` and
    `step(inputs_t, core, t, memories, mask_t) -> (h, core, memories)`.
    """

    core: ClassVar[int] = 1
    sites: ClassVar[tuple[str, ...]] = ()
    keeps_init: ClassVar[bool] = False  # a model's blanket init (e.g. rnnlm init_scale) leaves this cell alone

    def __init__(self, input_dim: int, hidden_dim: int):
        super().__init__()
        self.input_dim, self.hidden_dim = input_dim, hidden_dim

    def norm(self, site: str) -> SiteNorm | None:
        return getattr(self, f"norm_{site}", None)

    def start(self, batch: int, like: torch.Tensor) -> tuple:
        """The state before the first step: zeros, time 0, fresh site memories."""
        core = tuple(like.new_zeros(batch, self.hidden_dim) for _ in range(self.core))
        memories = tuple(self.memory(s, batch, like) for s in self.sites)
        return (*core, torch.zeros(batch, dtype=torch.long, device=like.device), *memories)

    def memory(self, site: str, batch: int, like: torch.Tensor) -> tuple:
        """What a site carries from step to step: its norm's memory (cells may add sites of their own)."""
        norm = self.norm(site)
        return norm.memory(batch, like) if norm is not None else ()

    def forward(self, x: torch.Tensor, state: tuple | None = None,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple]:
        """x (B, T, I), mask (B, T) True on real steps -> outputs (B, T, H), state after the T steps."""
        B, T = x.shape[:2]
        state = self.start(B, x) if state is None else state
        core, time, memories = list(state[: self.core]), state[self.core], dict(zip(self.sites, state[self.core + 1:]))
        t0 = int(time[0]) if B else 0
        inputs, memories = self.project(x, t0, memories, mask)
        masks = mask.unbind(1) if mask is not None else [None] * T
        outputs = []
        for t, (step_input, step_mask) in enumerate(zip(inputs.unbind(1), masks)):
            h, core, memories = self.step(step_input, core, t0 + t, memories, step_mask)
            outputs.append(h)
        out = torch.stack(outputs, 1) if outputs else x.new_zeros(B, 0, self.hidden_dim)
        return out, (*core, time + T, *(memories[s] for s in self.sites))

    def normalize(self, site: str, a: torch.Tensor, t: int, memories: dict, mask) -> torch.Tensor:
        """The site's norm at one step (identity without a norm); its memory is updated in `memories`."""
        norm = self.norm(site)
        if norm is None:
            return a
        a, memories[site] = norm.step(a, t, memories[site], mask)
        return a

    def normalize_sequence(self, site: str, a: torch.Tensor, t0: int, memories: dict, mask) -> torch.Tensor:
        norm = self.norm(site)
        if norm is None:
            return a
        a, memories[site] = norm.sequence(a, t0, memories[site], mask)
        return a


class GatedCell(CellLayer):
    """W x + U h with `gates` blocks of H, torch's parameter names and init U(-1/sqrt(H), 1/sqrt(H)).

    Sites x (input projection) and h (recurrent projection) are normalized without a shift; the biases
    b_ih + b_hh follow them.
    """

    gates: ClassVar[int] = 1
    recurrent_gates: ClassVar[int | None] = None  # blocks of U h when fewer than `gates`
    quantizable: ClassVar[bool] = True  # train.quantize fakes W and U as it does the fused kernels' (quantize.py)
    sites = ("x", "h")

    def __init__(self, norm: ComponentConfig, input_dim: int, hidden_dim: int):
        super().__init__(input_dim, hidden_dim)
        G, Gh = self.gates * hidden_dim, (self.recurrent_gates or self.gates) * hidden_dim
        self.weight_ih = nn.Parameter(torch.empty(G, input_dim))
        self.weight_hh = nn.Parameter(torch.empty(Gh, hidden_dim))
        self.bias_ih = nn.Parameter(torch.empty(G))
        self.bias_hh = nn.Parameter(torch.empty(Gh))
        self.norm_x = build_norm(norm, G, shift=False)
        self.norm_h = build_norm(norm, Gh, shift=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.hidden_dim)
        for p in self.parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound)

    def project(self, x, t0, memories, mask):
        xw = self.normalize_sequence("x", nn.functional.linear(x, self.weight_ih), t0, memories, mask)
        return xw + (self.bias_ih + self.bias_hh), memories

    def recurrent(self, h, t, memories, mask):
        return self.normalize("h", h @ self.weight_hh.t(), t, memories, mask)

    def preactivation(self, xw, h, t, memories, mask):
        """xw + N_h(U h): one fused multiply-add when the site has no norm."""
        if self.norm_h is None:
            return torch.addmm(xw, h, self.weight_hh.t())
        return xw + self.recurrent(h, t, memories, mask)


class RNNCell(GatedCell):
    def step(self, xw, core, t, memories, mask):
        h = torch.tanh(self.preactivation(xw, core[0], t, memories, mask))
        return h, [h], memories


class LSTMCell(GatedCell):
    gates, core, sites = 4, 2, ("x", "h", "c")

    def __init__(self, norm: ComponentConfig, input_dim: int, hidden_dim: int, clip: float | None = None):
        super().__init__(norm, input_dim, hidden_dim)
        self.norm_c = build_norm(norm, hidden_dim, shift=True)
        self.clip = clip

    def step(self, xw, core, t, memories, mask):
        h, c = core
        i, f, g, o = self.preactivation(xw, h, t, memories, mask).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        if self.clip is not None:  # GNMT's accumulator clipping, before c_t is read or carried on
            c = c.clamp(-self.clip, self.clip)
        h = torch.sigmoid(o) * torch.tanh(self.normalize("c", c, t, memories, mask))
        if self.clip is not None:
            h = h.clamp(-self.clip, self.clip)
        return h, [h, c], memories


class GRUCell(GatedCell):
    """torch's GRU: the hidden bias of the candidate sits inside the reset gate's product."""

    gates = 3

    def project(self, x, t0, memories, mask):
        xw = self.normalize_sequence("x", nn.functional.linear(x, self.weight_ih), t0, memories, mask)
        return xw + self.bias_ih, memories

    def step(self, xw, core, t, memories, mask):
        h = core[0]
        hw = self.recurrent(h, t, memories, mask) + self.bias_hh
        H = self.hidden_dim
        r = torch.sigmoid(xw[:, :H] + hw[:, :H])
        z = torch.sigmoid(xw[:, H : 2 * H] + hw[:, H : 2 * H])
        n = torch.tanh(xw[:, 2 * H :] + r * hw[:, 2 * H :])
        h = n + z * (h - n)
        return h, [h], memories


class ChungGRUCell(GatedCell):
    """The GRU of Cho et al. 2014 as Chung et al. 2014 write it; U of the candidate sees r * h.

    weight_ih holds [W_z; W_r; W], weight_hh [U_z; U_r], weight_hn U; the candidate's U(r * h) is its
    own norm site `hn`.
    """

    gates, recurrent_gates, sites = 3, 2, ("x", "h", "hn")

    def __init__(self, norm: ComponentConfig, input_dim: int, hidden_dim: int):
        super().__init__(norm, input_dim, hidden_dim)
        self.weight_hn = nn.Parameter(torch.empty(hidden_dim, hidden_dim))
        self.norm_hn = build_norm(norm, hidden_dim, shift=False)
        self.reset_parameters()

    def project(self, x, t0, memories, mask):
        xw = self.normalize_sequence("x", nn.functional.linear(x, self.weight_ih), t0, memories, mask)
        return xw + self.bias_ih, memories

    def step(self, xw, core, t, memories, mask):
        h, H = core[0], self.hidden_dim
        zr = torch.sigmoid(xw[:, : 2 * H] + self.recurrent(h, t, memories, mask) + self.bias_hh)
        z, r = zr[:, :H], zr[:, H:]
        candidate = torch.tanh(xw[:, 2 * H :] + self.normalize("hn", (r * h) @ self.weight_hn.t(), t, memories, mask))
        h = h + z * (candidate - h)
        return h, [h], memories


class PeepholeLSTMCell(LSTMCell):
    """Graves 2013: i, f = sigma(W x + U h + v * c_{t-1} + b), o = sigma(W x + U h + v_o * c_t + b),
    c_t = f c_{t-1} + i tanh(W_c x + U_c h + b_c), h_t = o tanh(c_t); gates ordered i, f, g, o."""

    def __init__(self, norm: ComponentConfig, input_dim: int, hidden_dim: int):
        super().__init__(norm, input_dim, hidden_dim)
        self.peephole = nn.Parameter(torch.empty(3, hidden_dim))
        self.reset_parameters()

    def step(self, xw, core, t, memories, mask):
        h, c = core
        i, f, g, o = self.preactivation(xw, h, t, memories, mask).chunk(4, 1)
        c = torch.sigmoid(f + self.peephole[1] * c) * c + torch.sigmoid(i + self.peephole[0] * c) * torch.tanh(g)
        h = torch.sigmoid(o + self.peephole[2] * c) * torch.tanh(self.normalize("c", c, t, memories, mask))
        return h, [h, c], memories


class RNNConfig(FusableConfig):
    fused_kind: ClassVar = "rnn"


class GRUConfig(FusableConfig):
    fused_kind: ClassVar = "gru"


class LSTMConfig(FusableConfig):
    fused_kind: ClassVar = "lstm"
    clip: float | None = Field(None, gt=0, description="GNMT's accumulator clipping (Wu et al. 2016, section 6): "
                               "c_t and h_t clamped to [-clip, clip] at every step (paper: 1; clamp's gradient); "
                               "runs the time loop, as the fused kernel hides c_t (null: off)")


@CELLS.register("rnn", config=RNNConfig)
def build_rnn(cfg: RNNConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> RNNCell:
    return RNNCell(norm, input_dim, hidden_dim)


@CELLS.register("gru", config=GRUConfig)
def build_gru(cfg: GRUConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> GRUCell:
    return GRUCell(norm, input_dim, hidden_dim)


@CELLS.register("lstm", config=LSTMConfig)
def build_lstm(cfg: LSTMConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> LSTMCell:
    return LSTMCell(norm, input_dim, hidden_dim, cfg.clip)


@CELLS.register("gru_chung", config=CellConfig)
def build_gru_chung(cfg: CellConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> ChungGRUCell:
    return ChungGRUCell(norm, input_dim, hidden_dim)


@CELLS.register("lstm_peephole", config=CellConfig)
def build_lstm_peephole(cfg: CellConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> PeepholeLSTMCell:
    return PeepholeLSTMCell(norm, input_dim, hidden_dim)


def build_cell(cell: CellConfig, norm: ComponentConfig, input_dim: int, hidden_dim: int) -> CellLayer:
    """A time-loop layer for `cell` with `norm` (the fused path is layers.Recurrent's business)."""
    problem = compatibility_problem(cell, norm)
    if problem:
        raise ValueError(problem)
    return CELLS.get(cell.name).builder(cell, norm, input_dim, hidden_dim)
