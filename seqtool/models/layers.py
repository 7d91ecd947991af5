"""Pieces several model families share: attention, fast dropout and sinusoidal positions (the
recurrent stacks are in seqtool/models/recurrent/layers.py)."""

from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Attention of decoder queries over encoder states.

    bahdanau (additive; Bahdanau et al. 2015):  e_ij = v^T tanh(W_q q_i + W_k k_j)
    general (multiplicative; Luong et al. 2015): e_ij = q_i^T W k_j
    dot (Luong et al. 2015):                     e_ij = q_i^T k_j
    a_ij = softmax_j(e_ij) over non-pad j;  c_i = sum_j a_ij k_j
    """

    def __init__(self, kind: str, query_dim: int, key_dim: int, attn_dim: int | None = None):
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            attn_dim = attn_dim or query_dim
            self.key_proj = nn.Linear(key_dim, attn_dim, bias=False)
            self.query_proj = nn.Linear(query_dim, attn_dim)
            self.v = nn.Linear(attn_dim, 1, bias=False)
        elif kind == "general":
            self.key_proj = nn.Linear(key_dim, query_dim, bias=False)
        elif kind == "dot":
            if key_dim != query_dim:
                raise ValueError("dot attention needs equal query and key sizes")
            self.key_proj = nn.Identity()
        else:
            raise ValueError(f"unknown attention {kind!r}")

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """Per-source projections, computed once per sentence and reused at every step."""
        return self.key_proj(memory)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor,
                mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """query (B, T, Q), keys (from self.keys), memory (B, S, K), mask (B, S)
        -> context (B, T, K), weights (B, T, S)."""
        if self.kind == "bahdanau":
            hidden = torch.tanh(self.query_proj(query).unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, A)
            scores = self.v(hidden).squeeze(-1)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores.float(), dim=-1).to(memory.dtype)
        return torch.bmm(weights, memory), weights


class Dropout(nn.Module):
    """Inverted dropout (Srivastava et al. 2014) with masks drawn as 8 random bits per element.

    torch's CPU dropout draws a float per element and takes ~5x longer; here 64-bit draws are cut
    into bytes, a byte below round(256 p) drops its element, and kept ones are scaled by
    256 / (256 - round(256 p)), so E[output] = input exactly (the rate is p to within 1/512).
    CUDA keeps torch's fused kernel.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.threshold = round(256 * p)
        self.scale = 256 / (256 - self.threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.is_cuda:
            return nn.functional.dropout(x, self.p, True)
        n = x.numel()
        bits = torch.empty((n + 7) // 8, dtype=torch.int64, device=x.device).random_(-(2**63), None)
        keep = bits.view(torch.uint8)[:n].view(x.shape) >= self.threshold
        return x.mul(keep).mul_(self.scale)


def sinusoids(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al. (2017) sec. 3.5: P(pos, 2i) = sin(pos / 10000^(2i/d)), P(pos, 2i+1) = cos(...):
    (...) positions -> (..., dim)."""
    freq = torch.exp(torch.arange(0, dim, 2, device=positions.device) * (-math.log(10000.0) / dim))
    angle = positions.unsqueeze(-1).float() * freq
    return torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)
