"""The one training loop every model shares through `model.loss(batch, label_smoothing, state)`.

A step: take `accumulate` batches, sum their losses normalised by the step's target tokens (over
all ranks), skip the step if the loss or gradient is not finite, clip, update, schedule (at the step
and scale the model's `schedule_clock` hook gives: MemN2N's linear start). Each training log line
carries what the model's `training_report` hook gives (a DEQ's solver iterations). Every `validate_every`
steps the task measures the model and the model's `validated` hook sees the metrics; every
`checkpoint.every` steps, at every new best validation (so `best.pt` is the best model validated, not
the best one that fell on a checkpoint step), at the end and on SIGINT/SIGTERM, rank 0 writes a
checkpoint that lets `--resume` continue exactly. A signal lets the step in progress finish but cuts a
validation short; a second one stops at once without saving (ForcedStop unwinds through the atomic
writes, so nothing half-written stays), and a third gets the default action, which ends the process
even inside a long operation.

Under train.privacy a step is DP-SGD's (seqtool/training/privacy.py): per-example gradients, clipped and
noised (train.clip_norm unused), and each training log line carries epsilon so far.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from seqtool.errors import SeqtoolError
from seqtool.metric_table import HIGHER_IS_BETTER, better
from seqtool.observe import LogWriteError
from seqtool.training.checkpoint import CheckpointDir, rng_state, set_rng_state
from seqtool.training.distributed import DistInfo, all_sum, broadcast_value
from seqtool.training.optim import Schedule, build_optimizer, clip_gradients
from seqtool.training.privacy import PrivateTraining
from seqtool.util.oom import out_of_memory_hint
from seqtool.util.precision import autocast, autocast_dtype

SPLIT = ("train", "validate", "save")  # the parts of a run's time budget, measured separately


class Stopped(Exception):
    """Training stopped on a signal after saving; carries the signal number."""

    def __init__(self, signum: int, step: int):
        super().__init__(f"stopped by signal {signum} at step {step}; continue with --resume")
        self.signum = signum


class ForcedStop(BaseException):
    """A second signal: raised from the handler wherever the main thread is, so no `except Exception`
    swallows it; carries the signal number."""

    def __init__(self, signum: int, saved: int | None):
        kept = f"the last checkpoint (step {saved}) is kept" if saved is not None else "no checkpoint was written"
        super().__init__(f"stopped at once by a second signal {signum}, without saving; {kept}")
        self.signum = signum


class _StopValidating(BaseException):
    """The first signal arrived while validating: the validation is dropped, the step is saved."""


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    position: int = 0  # global batches of this epoch already consumed (all ranks together)
    best_value: float | None = None
    best_step: int | None = None
    ranking: list = field(default_factory=list)  # [(value, step)] best first, for keep_best
    bad_validations: int = 0
    bad_steps: int = 0  # consecutive non-finite steps
    skipped_steps: int = 0
    elapsed: float = 0.0  # training seconds before this process started
    last_validated: int = -1
    window_tokens: int = 0  # target tokens and summed NLL of the steps since the last train log line
    window_nll: float = 0.0
    window_start: float = 0.0  # training seconds when that window began
    seconds: dict = field(default_factory=lambda: dict.fromkeys(SPLIT, 0.0))  # where `elapsed` went, by part

    def to_dict(self, elapsed: float) -> dict:
        plain = {k: [list(r) for r in v] if k == "ranking" else v for k, v in self.__dict__.items()}
        return {**plain, "elapsed": elapsed}


class LossModule(nn.Module):
    """Routes DDP's forward to model.loss so gradients synchronise (DDP hooks only fire in forward)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, label_smoothing: float, state=None):
        return self.model.loss(batch, label_smoothing, state)


class Trainer:
    def __init__(self, recipe, model, task, observer, checkpoints: CheckpointDir, *, device: torch.device,
                 dist_info: DistInfo = DistInfo(), extra_payload: dict | None = None):
        self.recipe, self.spec = recipe, recipe.train
        self.model, self.task, self.obs, self.ckpt = model, task, observer, checkpoints
        self.device, self.dist = device, dist_info
        self.extra_payload = extra_payload or {}
        self.optimizer = build_optimizer(model.parameters(), self.spec.optimizer)
        self.privacy = self._private(self.spec.privacy)
        self.schedule = Schedule(self.spec.schedule, self.spec.optimizer.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=autocast_dtype(self.spec.precision, device) == torch.float16)
        self.state = TrainerState()
        self.carry = None
        self.loss_module = self._wrap(model)
        self._batches: list | None = None
        self._stop_signal: int | None = None
        self._validating = False
        self.lr = self.spec.optimizer.lr
        self.startup = 0.0  # seconds before train() (data, model), set by train(startup=...)
        self._started = time.perf_counter()

    # -- setup ---------------------------------------------------------------------------------
    def _wrap(self, model: nn.Module) -> nn.Module:
        module = LossModule(model)
        if self.spec.compile:
            module = torch.compile(module)
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        return module

    def _private(self, spec) -> PrivateTraining | None:
        """DP-SGD (train.privacy): the optimizer becomes Opacus's DPOptimizer around the recipe's."""
        if spec is None:
            return None
        private = PrivateTraining(spec, LossModule(self.model), self.optimizer, examples=self.task.train_examples(),
                                  batch_size=self.task.batch_size(), max_steps=self.spec.max_steps,
                                  world=self.dist.world)
        self.optimizer = private.optimizer
        return private

    def privacy_report(self) -> dict[str, float]:
        """epsilon spent so far (at train.privacy.delta) and the noise multiplier; empty when not private."""
        return self.privacy.report() if self.privacy else {}

    def load_state(self, payload: dict) -> None:
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        if payload.get("scaler"):
            self.scaler.load_state_dict(payload["scaler"])
        trainer = dict(payload["trainer"])
        trainer["ranking"] = [tuple(r) for r in trainer["ranking"]]
        self.state = TrainerState(**trainer)
        self._started = time.perf_counter()
        # A carried LM state belongs to rank 0's rows; other ranks (or another world size) restart it.
        self.carry = payload.get("carry") if payload.get("world", 1) == self.dist.world == 1 else None
        set_rng_state(payload["rng"])
        if self.privacy:
            self.privacy.load_state_dict(payload["privacy"])

    def start_from(self, payload: dict, keep: set[str]) -> None:
        """Fine-tuning: a parent checkpoint's weights and, of its training state, only the parts `keep`
        names (optimizer, schedule, best, progress: what train.init_reset leaves out); the rest, and
        the data order, start as in a new run."""
        self.model.load_state_dict(payload["model"])
        parent = payload.get("trainer") or {}
        if "optimizer" in keep:
            ours = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
            self.optimizer.load_state_dict(payload["optimizer"])
            for group, settings in zip(self.optimizer.param_groups, ours):
                group.update(settings)  # the parent's moments, the recipe's hyperparameters
        s = self.state
        if "progress" in keep:
            s.step, s.epoch = parent["step"], parent["epoch"]
        if "best" in keep:
            s.best_value, s.bad_validations = parent["best_value"], parent["bad_validations"]
            if "progress" in keep:  # else the parent's best step could be mistaken for one of this run
                s.best_step, s.ranking = parent["best_step"], [tuple(r) for r in parent["ranking"]]
        if "schedule" in keep:
            self.schedule.load_state_dict(payload["schedule"])
            # continue at the parent's schedule position, whatever this run's step count starts at
            self.schedule.origin = s.step - (parent["step"] - self.schedule.origin)
        else:
            self.schedule.origin = s.step

    def payload(self) -> dict:
        scaler = self.scaler.state_dict() if self.scaler.is_enabled() else None
        return {**self.extra_payload, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": scaler,
                "trainer": self.state.to_dict(self._elapsed()),
                "rng": rng_state(), "carry": self.carry, "world": self.dist.world,
                "privacy": self.privacy.state_dict() if self.privacy else None}

    # -- the loop ------------------------------------------------------------------------------
    def train(self, startup: float = 0.0) -> TrainerState:
        """Run until a limit is reached; returns the final state. `startup`: the caller's seconds before
        this (data, model), logged with where the loop's time went, whichever way the loop ends."""
        self.startup = startup
        self._install_signals()
        try:
            self._loop()
        except LogWriteError as err:
            raise SeqtoolError(f"{err}; {self._save_after_failure()}") from None
        finally:
            self._restore_signals()
            with contextlib.suppress(LogWriteError):  # a full disk already said so; keep that message
                self.obs.info("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.time_split().items()))
        return self.state

    def _loop(self) -> None:
        while (reason := self._stop_reason()) == 0:
            with self._timed("train"):
                ntok, nll = self.step()
            s = self.state
            s.window_tokens, s.window_nll = s.window_tokens + ntok, s.window_nll + nll
            if s.step % self.recipe.log.every == 0:
                self._log_train()
            self._maybe_validate_and_save()
        if reason < 0 and self.state.last_validated != self.state.step:
            self._validate()
        self._save()
        signum = reason if reason > 0 else self._stop_signal
        if signum:
            raise Stopped(signum, self.state.step)

    def _save_after_failure(self) -> str:
        """After a failed log write: save the step reached if the checkpoint still fits, and say so."""
        try:
            self._save()
        except SeqtoolError as err:
            kept = self.ckpt.latest_step
            return f"could not save step {self.state.step} either ({err}); " + (
                f"the last checkpoint (step {kept}) is kept" if kept is not None else "no checkpoint was written")
        return f"saved step {self.state.step}; continue with --resume once there is room"

    def _stop_reason(self) -> int:
        """0 to go on, -1 when a limit is reached, a signal number when asked to stop; rank 0 decides
        for all ranks so they leave the loop at the same step."""
        s, spec = self.state, self.spec
        done = (spec.max_steps is not None and s.step >= spec.max_steps) or (
            spec.max_epochs is not None and s.epoch >= spec.max_epochs) or (
            spec.max_minutes is not None and self._elapsed() >= spec.max_minutes * 60) or (
            spec.early_stopping.patience is not None and s.bad_validations >= spec.early_stopping.patience)
        reason = self._stop_signal or (-1 if done else 0)
        return int(broadcast_value(reason, self.dist, self.device))

    def _elapsed(self) -> float:
        return self.state.elapsed + time.perf_counter() - self._started

    def _next_items(self, count: int) -> list:
        """The next `count` batches for this rank, rolling over epochs; position counts global batches."""
        items = []
        while len(items) < count:
            if self._batches is None:
                self._batches = self.task.epoch_batches(self.state.epoch)
            local = self.state.position // self.dist.world
            if local >= len(self._batches):
                self.state.epoch, self.state.position, self._batches = self.state.epoch + 1, 0, None
                continue
            items.append(self._batches[local])
            self.state.position += self.dist.world
        return items

    def step(self) -> tuple[int, float]:
        """One optimizer update; returns (target tokens on all ranks, summed NLL)."""
        if self.privacy:
            return self._private_step()
        batches = [self.task.batch(item) for item in self._next_items(self.spec.accumulate)]
        ntok = int(all_sum(sum(b.ntokens for b in batches), self.dist, self.device))
        self.loss_module.train()
        nll = 0.0
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1 or self.dist.world == 1
            sync = contextlib.nullcontext() if last else self.loss_module.no_sync()
            with sync, autocast(self.spec.precision, self.device):
                out = self.loss_module(batch, self.spec.label_smoothing, self.carry)
                self.scaler.scale(out.loss * (self.dist.world / max(ntok, 1))).backward()
            self.carry = out.state
            nll += float(out.nll)
        nll = all_sum(nll, self.dist, self.device)
        self._update(nll)
        return ntok, nll

    def _private_step(self) -> tuple[int, float]:
        """DP-SGD: one Poisson-sampled batch of examples, a gradient per example (clipped and noised by
        the DPOptimizer in _update), accounted whether or not the update is applied."""
        (index,) = self._next_items(1)
        self.loss_module.train()
        with autocast(self.spec.precision, self.device):
            nll = self.privacy.backward(self.task.batch(index) if len(index) else None, self.spec.label_smoothing)
        self._update(nll)
        self.privacy.stepped()
        return len(index), nll

    def _update(self, nll: float) -> None:
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = clip_gradients(params, self.spec.clip_norm, self.spec.clip_per_parameter)
        lr = self.schedule.apply(self.optimizer, *self.model.schedule_clock(self.state.step))
        if not (math.isfinite(nll) and math.isfinite(float(norm))):
            self._skip_step(nll)
        else:
            self.scaler.step(self.optimizer)
            self.state.bad_steps = 0
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.lr = lr

    def _skip_step(self, nll: float) -> None:
        self.state.bad_steps += 1
        self.state.skipped_steps += 1
        self.carry = None
        self.obs.info(f"step {self.state.step + 1}: non-finite loss or gradient ({nll}); step skipped "
                      f"({self.state.bad_steps} in a row)")
        if self.state.bad_steps >= self.spec.max_bad_steps:
            raise SeqtoolError(f"training diverged: {self.state.bad_steps} consecutive steps with a non-finite "
                               f"loss at step {self.state.step + 1}; the last good checkpoint is kept "
                               "(lower train.optimizer.lr or set train.clip_norm)")

    # -- validation, checkpoints, logs ---------------------------------------------------------
    def _maybe_validate_and_save(self) -> None:
        step = self.state.step
        if step % self.spec.validate_every == 0:
            self._validate()
        if step % self.spec.checkpoint.every == 0 or (self._is_best() and self.spec.checkpoint.keep_best):
            self._save()

    @contextlib.contextmanager
    def _timed(self, part: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.state.seconds[part] += time.perf_counter() - start

    def time_split(self) -> dict[str, float]:
        """Seconds spent starting this process, then (over the whole run) training, validating, saving,
        and on the rest (logs, signals)."""
        split = {part: round(self.state.seconds[part], 1) for part in SPLIT}
        other = round(max(self._elapsed() - sum(self.state.seconds.values()), 0.0), 1)
        return {"startup": round(self.startup, 1), **split, "other": other}

    def _validate(self) -> None:
        with self._timed("validate"):
            self._validate_now()

    def _validate_now(self) -> None:
        self.model.eval()
        metrics = self._measure() if self.dist.main else {}
        metric = self.spec.early_stopping.metric
        value = broadcast_value((metrics or {}).get(metric, 0.0), self.dist, self.device)
        if metrics is None:
            self.obs.info(f"valid step {self.state.step}: interrupted by signal {self._stop_signal}")
            return
        self._track_best(value)
        self.state.last_validated = self.state.step
        self.obs.scalars(self.state.step, "valid", metrics, elapsed=self._elapsed())
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.obs.info(f"valid step {self.state.step}: {shown}" + (" (best)" if self._is_best() else ""))

    def _measure(self) -> dict | None:
        """The task's validation metrics with what the model's `validated` hook adds, or None when a signal
        cut it short (see _on_signal)."""
        try:
            self._validating = True
            if self._stop_signal is not None:  # it came just before: the handler did not raise
                raise _StopValidating
            with out_of_memory_hint("validating", "decode.batch_tokens or eval.valid_beam"):
                metrics = self.task.validate(self.model)
            metrics = {**metrics, **self.model.validated(metrics)}
            self._validating = False  # inside the try: a signal landing before this line is caught too
        except _StopValidating:
            self._validating = False
            return None
        return metrics

    def _better(self, a: float, b: float) -> bool:
        return better(self.spec.early_stopping.metric, a, b)

    def _track_best(self, value: float) -> None:
        s = self.state
        if s.best_value is None or self._better(value, s.best_value):
            s.best_value, s.best_step, s.bad_validations = value, s.step, 0
        else:
            s.bad_validations += 1
        sign = -1 if HIGHER_IS_BETTER[self.spec.early_stopping.metric] else 1
        s.ranking = sorted([*s.ranking, (value, s.step)], key=lambda r: sign * r[0])
        self.schedule.observe(value, self._better)

    def _is_best(self) -> bool:
        return self.state.best_step == self.state.step

    def _save(self) -> None:
        if not self.dist.main or (self.ckpt.latest_step == self.state.step):
            return
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise SeqtoolError(f"step {self.state.step}: the weights are no longer finite; not saving over the "
                               "last good checkpoint (lower train.optimizer.lr or set train.clip_norm)")
        best_steps = [step for _, step in self.state.ranking]
        with self._timed("save"):
            self.ckpt.save(self.state.step, self.payload(), best_steps, self._is_best())
        self.ckpt.latest_step = self.state.step

    def _log_train(self) -> None:
        """The mean loss since the last log line; the window's sums travel in checkpoints, so a resumed
        run logs what the uninterrupted one did."""
        s = self.state
        loss = s.window_nll / max(s.window_tokens, 1)
        rate = s.window_tokens / max(self._elapsed() - s.window_start, 1e-9)
        s.window_tokens, s.window_nll, s.window_start = 0, 0.0, self._elapsed()
        reported = self.model.training_report()
        reported = {**reported, **self.privacy_report()}
        values = {"loss": loss, "ppl": math.exp(min(loss, 50)), "lr": self.lr, "tokens_per_s": rate, **reported}
        self.obs.scalars(s.step, "train", values, elapsed=self._elapsed())
        self.obs.progress(s.step, f"loss {loss:.3f} lr {self.lr:.2e} {rate:.0f} tok/s")
        if self.obs.bar is None:
            extra = "".join(f" {k} {v:.3g}" for k, v in reported.items())
            self.obs.info(f"step {s.step} epoch {s.epoch}: loss {loss:.4f} lr {self.lr:.3g} {rate:.0f} tok/s{extra}")

    # -- signals -------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._previous = {}
        with contextlib.suppress(ValueError):  # not in the main thread
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
            if self.dist.main:  # os.write: a handler may run in the middle of a print to stderr
                with contextlib.suppress(OSError):
                    os.write(2, f"seqtool: signal {signum}: stopping after this step (once more to stop at once, "
                                "without saving)\n".encode())
            if self._validating:
                raise _StopValidating
            return
        for other in self._previous:
            signal.signal(other, signal.SIG_DFL)
        raise ForcedStop(signum, self.ckpt.latest_step)

    def _restore_signals(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
