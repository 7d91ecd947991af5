"""Token-level losses: label-smoothed cross-entropy of an output layer, fused and chunked.

For features h_i, an output layer (W, b) and targets y_i (Szegedy et al. 2016 for the smoothing):
    z_i = W h_i + b,   log p_i = z_i - logsumexp(z_i)
    loss = sum_i (1 - eps) * -log p_i[y_i] + eps * -(1/V) sum_v log p_i[v]
    d loss / d z_i = softmax(z_i) - (1 - eps) onehot(y_i) - eps / V
An output layer with a `logit_clip` bound γ (GNMT's logit clipping, seqtool/models/quantize.py) uses
clamp(z_i, -γ, γ) in place of z_i, and d loss / d z_i is zero where |z_i| > γ.
The rows are processed in chunks and the gradients formed in the forward pass, so the (N, V) logits
never exist at once; on a CPU this is ~40% faster than linear + cross_entropy with identical results.
Under bf16 autocast the three matmuls take bf16 operands (the output layer is most of a small
translation model's arithmetic), while the logits, softmax, loss and accumulated gradients stay fp32.

objective_loss: the per-step objectives of sequence models (tasks synthetic and music), whichever
family computes their outputs: cross-entropy per class head, Bernoulli NLL, squared error.
"""

from __future__ import annotations

import torch
from torch import nn

from seqtool.specials import PAD

CHUNK = 128


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, targets, epsilon, chunk, dtype, clip):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grads = [torch.empty_like(h) if need_h else None, torch.zeros_like(weight) if need_w else None,
                 torch.zeros_like(bias) if need_b else None]
        loss, nll = h.new_zeros(()), h.new_zeros(())
        rows = torch.arange(chunk, device=h.device)
        low = weight.to(dtype)
        for start in range(0, h.size(0), chunk):
            hc, yc = h[start : start + chunk].to(dtype), targets[start : start + chunk]
            logits = _mm(hc, low.t()).add_(bias)
            inside = None if clip is None else logits.abs() <= clip  # where the clamped logits pass a gradient
            if clip is not None:
                logits.clamp_(-clip, clip)
            chosen, mean = logits.gather(1, yc.unsqueeze(1)).squeeze(1), logits.mean(1)
            peak = logits.amax(1, keepdim=True)
            exps = logits.sub_(peak).exp_()  # one exp pass, in place of the logits: no (chunk, V) temporary
            total = exps.sum(1)
            lse = total.log().add_(peak.squeeze(1))
            nll_c = lse - chosen
            nll += nll_c.sum()
            loss += (1.0 - epsilon) * nll_c.sum() + epsilon * (lse - mean).sum()
            if need_h or need_w or need_b:
                _chunk_grads(grads, exps.div_(total.unsqueeze(1)), yc, rows, hc, low, epsilon,
                             slice(start, start + chunk), inside)
        ctx.save_for_backward(*(g if g is not None else h.new_empty(0) for g in grads))
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        need = ctx.needs_input_grad
        scaled = [g * grad_loss if n else None for g, n in zip(ctx.saved_tensors, need)]
        return (*scaled, None, None, None, None, None)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b in the operands' dtype, returned in fp32 (a no-op cast when they are fp32)."""
    return torch.mm(a, b).float()


def _chunk_grads(grads, g, yc, rows, hc, weight, epsilon, where, inside) -> None:
    """Gradients of one chunk from its softmax g (N, V), overwritten."""
    if epsilon:
        g.sub_(epsilon / g.size(1))
    g[rows[: len(yc)], yc] -= 1.0 - epsilon
    if inside is not None:
        g.mul_(inside)
    grad_h, grad_w, grad_b = grads
    if grad_b is not None:
        grad_b += g.sum(0)
    g = g.to(weight.dtype)
    if grad_h is not None:
        grad_h[where] = _mm(g, weight)
    if grad_w is not None:
        _add_mm(grad_w, g.t(), hc)


def _add_mm(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out += a @ b, in place when the operands are out's dtype: no (V, E) temporary per chunk."""
    if a.dtype == out.dtype:
        out.addmm_(a, b)
    else:
        out += _mm(a, b)


def output_loss(features: torch.Tensor, targets: torch.Tensor, out: nn.Linear,
                epsilon: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, detached NLL) summed over non-pad targets.

    Args:
        features: (..., D) inputs of the output layer `out`.
        targets: (...) ids; PAD positions are skipped before any output computation.
    """
    keep = targets != PAD
    h = features[keep].float()
    bias = out.bias if out.bias is not None else h.new_zeros(out.weight.size(0))
    kind = h.device.type
    dtype = torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else torch.float32
    with torch.autocast(kind, enabled=False):
        loss, nll = _LinearCrossEntropy.apply(h, out.weight.float(), bias.float(), targets[keep], epsilon, CHUNK,
                                              dtype, getattr(out, "logit_clip", None))
    return loss, nll.detach()


def target_log_probs(features: torch.Tensor, targets: torch.Tensor, out: nn.Linear) -> torch.Tensor:
    """log p_i[y_i] of every target under the full softmax of `out`, shaped as targets, 0 at PAD (in
    fp32, in chunks of rows as the loss is, so the (N, V) log-probabilities never exist at once)."""
    keep = targets != PAD
    h, y = features[keep].float(), targets[keep]
    result = torch.zeros(targets.shape, device=features.device)
    chunks = []
    with torch.autocast(h.device.type, enabled=False):
        for start in range(0, len(y), CHUNK):
            logits = out(h[start : start + CHUNK]).float()
            chosen = logits.gather(1, y[start : start + CHUNK].unsqueeze(1)).squeeze(1)
            chunks.append(chosen - torch.logsumexp(logits, dim=1))
    if chunks:
        result[keep] = torch.cat(chunks)
    return result


def objective_loss(outputs: torch.Tensor, batch, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(training loss, detached loss without smoothing), summed over the batch's weighted outputs."""
    if batch.objective == "ce":
        heads = batch.targets.size(-1) if batch.targets.dim() == 3 else 1
        logits = outputs.view(*batch.targets.shape[:2], heads, -1)[batch.weight.view(*batch.targets.shape[:2], heads)]
        targets = batch.targets[batch.weight]
        nll = nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        if not label_smoothing:
            return nll, nll.detach()
        return nn.functional.cross_entropy(logits.float(), targets, reduction="sum",
                                           label_smoothing=label_smoothing), nll.detach()
    picked, targets = outputs[batch.weight].float(), batch.targets[batch.weight]
    if batch.objective == "bce":
        loss = nn.functional.binary_cross_entropy_with_logits(picked, targets, reduction="sum")
    else:
        loss = (picked - targets).square().sum()
    return loss, loss.detach()
