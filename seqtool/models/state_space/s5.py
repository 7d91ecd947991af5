"""S5: Simplified State Space Layers (Smith, Warrington and Linderman, ICLR 2023, arXiv 2208.04933);
models `s5_lm` (language model), `s5_sequence` (an output per step: synthetic and music tasks) and
`s5_classifier` (one label per sequence: task classify).

The SSM is multi-input multi-output and diagonal, with inputs u_k ∈ R^H and a complex state x_k ∈ C^P:
    continuous   x'(t) = Λ x(t) + B̃ u(t),   y(t) = Re(C̃ x(t)) + D ⊙ u(t)
    zero-order hold with learned steps Δ ∈ R^P (one per state; eq. 6):
                 Λ̄ = exp(ΛΔ),   B̄ = Λ^{-1} (Λ̄ - I) B̃
    recurrence   x_k = Λ̄ x_{k-1} + B̄ u_k,   y_k = Re(C̃ x_k) + D ⊙ u_k
computed for training by a parallel scan (scan.py) and, one step at a time, for generation.
Conjugate symmetry (sec. 4.3): a real S has eigenvalues in conjugate pairs, so only P/2 of them are
kept and y_k = 2 Re(C̃ x_k) over those (P is `state_dim`, the size before halving, as in the authors'
code). With `clip_eigs` Re Λ is held at or below -1e-4, so the recurrence is stable at any length.
Bidirectional (classifier only): a second scan runs backwards and y adds 2 Re(C̃_rev x_rev).

Initialization (sec. 4.1, app. B):
    HiPPO-N   S = A_LegS + p pᵀ with A_LegS[n, k] = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k)
              and p_n = sqrt(n + ½); S = -½ I + (skew-symmetric), so S = V Λ V* with Re Λ = -½
              (the mean of diag S) and Im Λ, V from the eigendecomposition of the skew part.
    blocks    Λ is J copies of the HiPPO-N eigenvalues of a P/J matrix, V block-diagonal (`blocks`).
    B̃ = V^{-1} B, C̃ = C V with B, C LeCun-normal (variance 1 / input width: H for B, P for the real
    and imaginary parts of C); D ~ N(0, 1); log Δ ~ U(log dt_min, log dt_max).

Layer (sec. 6, the authors' `half_glu2`; post-norm by default):
    y = SSM(z),  g = dropout(GELU(y)),  o = dropout(y ⊙ σ(W g)),  z ← norm(z + o)
(`glu: false`: o = g; `prenorm`: z ← z + o(norm(z)), with a final norm). The language model's state
is the last x of each layer, carried to the next block, so blocks scored in turn equal one pass.
The SSM runs in float32/complex64 whatever the training precision.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from seqtool.models.adaptive import AdaptiveSoftmaxSpec, build_adaptive
from seqtool.models.base import LanguageModel, SequenceClassifier, SequenceModel, VocabSizes
from seqtool.models.config import ModelConfig
from seqtool.models.layers import Dropout
from seqtool.models.state_space.scan import linear_scan
from seqtool.registry import MODELS
from seqtool.specials import PAD

CLIP_REAL = -1e-4  # clip_eigs: the largest real part an eigenvalue may take


class S5Config(ModelConfig):
    """The keys every S5 model shares (the layer stack)."""

    d_model: int = Field(128, gt=0, description="H, the width of every layer's input and output")
    state_dim: int = Field(64, gt=0, description="P, the state size before conjugate symmetry keeps half of it "
                           "(even; the paper's ssm_size_base)")
    blocks: int = Field(1, ge=1, description="J, the HiPPO-N blocks of the initial Λ (each P/J states; P/J even)")
    layers: int = Field(4, ge=1, description="S5 layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="after the activation and after the gate of each layer")
    glu: bool = Field(True, description="gate the SSM's output, y ⊙ σ(W GELU(y)) (the paper's half GLU); "
                      "false: GELU(y)")
    prenorm: bool = Field(False, description="layer norm before each layer (and at the end) instead of after it")
    dt_min: float = Field(0.001, gt=0, description="smallest initial time step Δ")
    dt_max: float = Field(0.1, gt=0, description="largest initial time step Δ")
    clip_eigs: bool = Field(False, description="hold Re Λ <= -1e-4 (stable on any length; the authors advise it "
                            "for autoregressive models)")

    @model_validator(mode="after")
    def _sizes_fit(self) -> S5Config:
        if self.state_dim % self.blocks or (self.state_dim // self.blocks) % 2:
            raise ValueError(f"state_dim {self.state_dim} must split into {self.blocks} blocks of even size")
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min {self.dt_min} above dt_max {self.dt_max}")
        return self


def hippo_n(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (n,) and unitary eigenvectors (n, n), complex128, of the HiPPO-N matrix of size n."""
    q = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    legs = -(torch.tril(q[:, None] * q[None, :], -1) + torch.diag(torch.arange(1, n + 1, dtype=torch.float64)))
    p = torch.sqrt(torch.arange(n, dtype=torch.float64) + 0.5)
    normal = legs + p[:, None] * p[None, :]
    diagonal = torch.diagonal(normal)
    skew = normal - torch.diag(diagonal)
    imag, vectors = torch.linalg.eigh(-1j * skew.to(torch.complex128))  # -i·skew is Hermitian
    return torch.complex(diagonal.mean().expand(n), imag), vectors


def discretize_zoh(lam: torch.Tensor, b: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold: Λ̄ = exp(ΛΔ), B̄ = Λ^{-1}(Λ̄ - 1) B̃ for Λ (P,), B̃ (P, H), Δ (P,)."""
    lam_bar = torch.exp(lam * step)
    return lam_bar, ((lam_bar - 1) / lam)[:, None] * b


def _complex_param(value: torch.Tensor) -> nn.Parameter:
    """A complex matrix stored as real pairs (optimizers, checkpoints and NaN checks see real numbers)."""
    return nn.Parameter(torch.view_as_real(value.to(torch.complex64)).contiguous())


def _pairs(m: torch.Tensor) -> torch.Tensor:
    """(..., N) complex -> (..., 2N) real, the real and imaginary parts interleaved: a real matmul with it
    yields view_as_real of the complex product, one contiguous real GEMM instead of two strided ones."""
    return torch.view_as_real(m).flatten(-2)


class S5SSM(nn.Module):
    def __init__(self, cfg: S5Config, bidirectional: bool = False):
        super().__init__()
        h, size = cfg.d_model, cfg.state_dim // cfg.blocks
        lam, vectors = hippo_n(size)
        half = size // 2  # conjugate symmetry: eigh sorts Im Λ, so the first half pairs with the second
        lam = lam[:half].repeat(cfg.blocks)
        v = torch.block_diag(*[vectors[:, :half]] * cfg.blocks)  # (P, P/2)
        self.clip = cfg.clip_eigs
        self.lambda_re = nn.Parameter(lam.real.float())
        self.lambda_im = nn.Parameter(lam.imag.float())
        b = torch.randn(cfg.state_dim, h, dtype=torch.float64) / math.sqrt(h)
        self.b = _complex_param(v.conj().T @ b.to(torch.complex128))
        self.c = nn.ParameterList(_complex_param(self._lecun_c(h, cfg.state_dim) @ v)
                                  for _ in range(2 if bidirectional else 1))
        self.d = nn.Parameter(torch.randn(h))
        self.log_step = nn.Parameter(torch.empty(len(lam)).uniform_(math.log(cfg.dt_min), math.log(cfg.dt_max)))

    @staticmethod
    def _lecun_c(h: int, state: int) -> torch.Tensor:
        return torch.complex(torch.randn(h, state, dtype=torch.float64), torch.randn(h, state, dtype=torch.float64)) \
            / math.sqrt(state)

    def eigenvalues(self) -> torch.Tensor:
        real = self.lambda_re.clamp(max=CLIP_REAL) if self.clip else self.lambda_re
        return torch.complex(real, self.lambda_im)

    def discrete(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Λ̄ (P/2,) and B̄ (P/2, H) of the current parameters."""
        return discretize_zoh(self.eigenvalues(), torch.view_as_complex(self.b), self.log_step.exp())

    def forward(self, u: torch.Tensor, start: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        """u (B, T, H), the state before it (B, P/2) or None, mask (B, T) or None (padding gets no input)
        -> y (B, T, H) and the last state (of the forward scan)."""
        with torch.autocast(u.device.type, enabled=False):
            u = u.float()
            lam_bar, b_bar = self.discrete()
            bu = torch.view_as_complex((u @ _pairs(b_bar.T)).unflatten(-1, (-1, 2)))
            if mask is not None:
                bu = bu * mask.unsqueeze(-1)
            states = linear_scan(lam_bar, bu, start)
            y = self._read(states, 0) + self.d * u
            if len(self.c) == 2:
                y = y + self._read(linear_scan(lam_bar, bu.flip(-2)).flip(-2), 1)
        return y, states[..., -1, :]

    def _read(self, states: torch.Tensor, which: int) -> torch.Tensor:
        """2 Re(C̃ x) = 2 (x_re C_reᵀ - x_im C_imᵀ), one real matmul over the interleaved (re, im) pairs."""
        c = self.c[which]
        weight = torch.stack((c[..., 0], -c[..., 1]), -1).flatten(-2)  # (H, P): re, -im interleaved
        return 2 * torch.view_as_real(states).flatten(-2) @ weight.T


class S5Layer(nn.Module):
    def __init__(self, cfg: S5Config, bidirectional: bool = False):
        super().__init__()
        self.ssm = S5SSM(cfg, bidirectional)
        self.gate = nn.Linear(cfg.d_model, cfg.d_model) if cfg.glu else None
        self.norm = nn.LayerNorm(cfg.d_model)
        self.drop = Dropout(cfg.dropout)
        self.prenorm = cfg.prenorm

    def forward(self, z: torch.Tensor, start: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        y, state = self.ssm(self.norm(z) if self.prenorm else z, start, mask)
        g = self.drop(nn.functional.gelu(y))
        out = z + (self.drop(y * torch.sigmoid(self.gate(g))) if self.gate is not None else g)
        return (out if self.prenorm else self.norm(out)), state


class S5Stack(nn.Module):
    """The layers, each carrying its own state; a final norm after pre-norm layers."""

    def __init__(self, cfg: S5Config, bidirectional: bool = False):
        super().__init__()
        self.layers = nn.ModuleList(S5Layer(cfg, bidirectional) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model) if cfg.prenorm else nn.Identity()

    def forward(self, z: torch.Tensor, states: list | None = None, mask: torch.Tensor | None = None):
        """z (B, T, H) and each layer's state before it (None: zeros) -> (B, T, H) and the states after it."""
        after = []
        for i, layer in enumerate(self.layers):
            z, state = layer(z, None if states is None else states[i], mask)
            after.append(state)
        return self.norm(z), after


class S5LMConfig(S5Config):
    arch: Literal["s5_lm"] = "s5_lm"
    tasks: ClassVar = ("lm",)
    tie_embeddings: bool = Field(False, description="share the input embedding and the output projection")
    adaptive_softmax: AdaptiveSoftmaxSpec | None = Field(
        None, description="an adaptive softmax (seqtool/models/adaptive.py) instead of the full one: {cutoffs, "
        "div_value}")

    @model_validator(mode="after")
    def _one_output(self) -> S5LMConfig:
        if self.tie_embeddings and self.adaptive_softmax is not None:
            raise ValueError("tie_embeddings needs the full softmax (adaptive_softmax: null)")
        return self


class S5LM(LanguageModel):
    def __init__(self, cfg: S5LMConfig, vocab: int):
        super().__init__()
        # N(0, 1/H): tied, the logits of unit-variance features start at unit scale (the layers normalize
        # their inputs' scale away, so the untied embedding may start there too)
        self.embed = nn.Embedding(vocab, cfg.d_model, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, 0.0, cfg.d_model**-0.5)
        nn.init.zeros_(self.embed.weight[PAD])
        self.stack = S5Stack(cfg)
        self.drop = Dropout(cfg.dropout)
        if cfg.adaptive_softmax is not None:
            self.adaptive = build_adaptive(cfg.adaptive_softmax, cfg.d_model, vocab)
            return
        self.out = nn.Linear(cfg.d_model, vocab)
        if cfg.tie_embeddings:
            self.out.weight = self.embed.weight

    def forward(self, inputs: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """inputs (B, T) ids and each layer's state after the text before them -> (B, T, H), new states."""
        features, state = self.stack(self.drop(self.embed(inputs)), state)
        return self.drop(features), state

    def step(self, tokens: torch.Tensor, state: list | None = None) -> tuple[torch.Tensor, list]:
        """Recurrent generation: (B,) ids -> (B, V) next-token log-probabilities and the state after them,
        one O(P H) update per layer instead of a scan over the prefix."""
        features, state = self(tokens.unsqueeze(1), state)
        return self.log_probs(features[:, 0]), state


class S5SequenceConfig(S5Config):
    arch: Literal["s5_sequence"] = "s5_sequence"
    tasks: ClassVar = ("synthetic", "music")


class S5Sequence(SequenceModel):
    """Causal: the output at step t sees inputs up to t (a linear encoder, the layers, a linear decoder)."""

    def __init__(self, cfg: S5SequenceConfig, sizes: VocabSizes):
        super().__init__()
        self.encode = nn.Linear(sizes.src, cfg.d_model)
        self.stack = S5Stack(cfg)
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, sizes.tgt)

    def outputs(self, batch) -> torch.Tensor:
        return self.out(self.drop(self.stack(self.encode(batch.inputs))[0]))


class S5ClassifierConfig(S5Config):
    arch: Literal["s5_classifier"] = "s5_classifier"
    tasks: ClassVar = ("classify",)
    bidirectional: bool = Field(True, description="a second scan runs backwards, with its own C̃")


class S5Classifier(SequenceClassifier):
    """Embedding, the layers, the mean of the top layer over the real positions, a linear decoder."""

    def __init__(self, cfg: S5ClassifierConfig, sizes: VocabSizes):
        super().__init__()
        self.embed = nn.Embedding(sizes.src, cfg.d_model, padding_idx=PAD)
        self.stack = S5Stack(cfg, cfg.bidirectional)
        self.drop = Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.d_model, sizes.tgt)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        features = self.stack(self.drop(self.embed(tokens)), mask=mask)[0]
        weights = mask.unsqueeze(-1).to(features.dtype)
        return self.out(self.drop((features * weights).sum(1) / weights.sum(1).clamp(min=1)))


@MODELS.register("s5_lm", config=S5LMConfig)
def build_s5_lm(cfg: S5LMConfig, sizes: VocabSizes) -> S5LM:
    return S5LM(cfg, sizes.tgt)


@MODELS.register("s5_sequence", config=S5SequenceConfig)
def build_s5_sequence(cfg: S5SequenceConfig, sizes: VocabSizes) -> S5Sequence:
    return S5Sequence(cfg, sizes)


@MODELS.register("s5_classifier", config=S5ClassifierConfig)
def build_s5_classifier(cfg: S5ClassifierConfig, sizes: VocabSizes) -> S5Classifier:
    return S5Classifier(cfg, sizes)
