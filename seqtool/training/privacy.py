"""Differentially private training, DP-SGD (Abadi et al. 2016), as train.privacy; normalization layers
under it after Davody et al. 2020 ("On the effect of normalization layers on differentially private
training of deep neural networks", papers.md card 15).

A step, over a batch B drawn by Poisson sampling (each of the N training examples independently with
probability q = train.batch_size / N; seqtool/tasks/base.py ExampleTask):
    g_i = grad_theta loss(x_i, y_i)                       each example's gradient, on its own
    g_i <- g_i / max(1, ||g_i||_2 / C)                     clipped to C = max_grad_norm
    g   = (sum_{i in B} g_i + N(0, sigma^2 C^2 I)) / (qN)  noisy mean over the expected batch size
then the recipe's optimizer steps with g. (epsilon, delta) after T steps of the subsampled Gaussian
mechanism with rate q and noise sigma comes from Opacus's accountant (RDP by default, or PRV).

Each example's gradient is that of the example's loss computed as a batch of one (torch.func: grad of
the loss vmapped over the examples, as Opacus's functorch mode does), so it cannot depend on another
example whatever the model does (the paper's code loops over microbatches of one for the same reason;
seqtool loops too for a model with an operator vmap cannot batch, such as MemN2N's nonzero). Opacus's
hook-based per-sample gradients do not reach seqtool's own recurrent cells (parameters used inside a
Python time loop, with a state argument its hooks cannot read). Clipping, noise and accounting are
Opacus's (DPOptimizer, RDPAccountant/PRVAccountant, get_noise_multiplier); the noise comes from torch's
global generator, which checkpoints carry, so `--resume` repeats the same noise, and the accountant's
history travels in checkpoints, so a resumed run reports the epsilon of a straight one.

Refused here (one line, exit 2): batch statistics (torch's batch norms, which Opacus's ModuleValidator
refuses for the same reason, and seqtool's norms marked `couples_examples`: an example's normalized
value, and the running statistics kept, depend on the other examples), and more than one process (DDP
would need the per-example gradients clipped before the all-reduce and the noise added once; Opacus's
DPDDP is not wired in). The recipe's other refusals are in seqtool/recipe/schema.py (_privacy_problems).
"""

from __future__ import annotations

import warnings
from dataclasses import fields, replace

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from seqtool.errors import SeqtoolError, first_line


def quiet(compute):
    """An accountant's answer without its warning that a larger RDP order might give a tighter bound (the
    bound given still holds; the search for a noise multiplier tries many orders at its extremes)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return compute()


def batch_statistics_module(model: nn.Module) -> str | None:
    """The name of the first module whose training output mixes examples through batch statistics."""
    for name, module in model.named_modules():
        if getattr(module, "couples_examples", False) or isinstance(module, nn.modules.batchnorm._BatchNorm):
            return name or type(module).__name__
    return None


class PrivateTraining:
    """DP-SGD state of a run: the wrapped optimizer, the noise multiplier and the accountant."""

    def __init__(self, spec, loss: nn.Module, optimizer: torch.optim.Optimizer, *, examples: int,
                 batch_size: int, max_steps: int | None, world: int):
        """`loss`: a module whose forward(batch, label_smoothing) is its model's `loss` (LossModule)."""
        if world > 1:
            raise SeqtoolError("train.privacy: DP-SGD runs in one process (DDP would need every example's "
                               "gradient clipped before the all-reduce and the noise added once); drop torchrun")
        coupled = batch_statistics_module(loss)
        if coupled is not None:
            raise SeqtoolError(f"train.privacy: module {coupled!r} normalizes with batch statistics, which mix "
                               "examples and keep private running statistics; use norm: layer or none")
        # imported here: Opacus (with scipy and torch.distributed.tensor) takes ~1.4 s to import, which
        # every command would otherwise pay at start-up
        from opacus.accountants import PRVAccountant, RDPAccountant
        from opacus.optimizers import DPOptimizer

        self.spec, self.loss = spec, loss
        self.vectorized = True  # per-example gradients by vmap until the model turns out not to allow it
        self.sample_rate = min(batch_size / examples, 1.0)
        self.accountant = {"rdp": RDPAccountant, "prv": PRVAccountant}[spec.accountant]()
        self.noise = spec.noise_multiplier or self._noise_for(spec.target_epsilon, max_steps)
        self.optimizer = DPOptimizer(optimizer, noise_multiplier=self.noise, max_grad_norm=spec.max_grad_norm,
                                     expected_batch_size=batch_size, loss_reduction="mean")

    def _noise_for(self, epsilon: float, steps: int) -> float:
        from opacus.accountants.utils import get_noise_multiplier

        try:
            return quiet(lambda: get_noise_multiplier(
                target_epsilon=epsilon, target_delta=self.spec.delta, sample_rate=self.sample_rate, steps=steps,
                accountant=self.spec.accountant))
        except ValueError as err:
            raise SeqtoolError(f"train.privacy.target_epsilon {epsilon}: {first_line(err)}") from None

    def backward(self, batch, label_smoothing: float) -> float:
        """Set each parameter's per-example gradients (p.grad_sample, (B, *p.shape)); returns the summed NLL.
        `batch`: the task's batch, a dataclass whose tensors hold the examples on dim 0 (None: no example
        was drawn, and the step releases noise alone)."""
        params = {name: p.detach() for name, p in self.loss.named_parameters() if p.requires_grad}
        if batch is None:
            for p in self.loss.parameters():
                p.grad_sample = p.new_zeros((0, *p.shape))
            return 0.0
        rows = {f.name: v for f in fields(batch) if isinstance(v := getattr(batch, f.name), torch.Tensor)}

        def example(params: dict, row: dict):
            out = functional_call(self.loss, params, (replace(batch, **{k: v.unsqueeze(0) for k, v in row.items()}),
                                                      label_smoothing))
            return out.loss, out.nll

        per_example = grad(example, has_aux=True)
        if self.vectorized:
            try:
                grads, nll = vmap(per_example, in_dims=(None, 0), randomness="different")(params, rows)
            except RuntimeError as err:  # an operator vmap cannot batch (MemN2N's nonzero): loop from now on
                if "vmap" not in str(err):
                    raise
                self.vectorized = False
        if not self.vectorized:
            count = next(iter(rows.values())).size(0)
            try:
                each = [per_example(params, {k: v[i] for k, v in rows.items()}) for i in range(count)]
            except RuntimeError as err:  # e.g. an autograd.Function without setup_context (NC-GRU's Cayley map)
                raise SeqtoolError(f"train.privacy: torch.func cannot take this model's per-example gradients "
                                   f"({first_line(err)})") from None
            grads = {name: torch.stack([g[name] for g, _ in each]) for name in params}
            nll = torch.stack([n for _, n in each])
        seen = set()
        for name, p in self.loss.named_parameters():
            if p.requires_grad:  # parameters summed together (b_ih + b_hh) get one tensor; Opacus marks each
                p.grad_sample = grads[name].clone() if id(grads[name]) in seen else grads[name]
                seen.add(id(grads[name]))
        return float(nll.sum())

    def stepped(self) -> None:
        """Account one release of the noisy gradient (every step, whether the update was applied or not)."""
        self.accountant.step(noise_multiplier=self.noise, sample_rate=self.sample_rate)

    def report(self) -> dict[str, float]:
        epsilon = quiet(lambda: self.accountant.get_epsilon(self.spec.delta)) if len(self.accountant) else 0.0
        return {"epsilon": float(epsilon), "sigma": float(self.noise)}

    def state_dict(self) -> dict:
        return self.accountant.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.accountant.load_state_dict(state)
