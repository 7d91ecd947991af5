"""`seqtool train`: prepare the data, build the model, train, and report on the test split."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

from seqtool.commands.finetune import load_parent
from seqtool.commands.recipes import Recipe, drop_retired, dump_recipe
from seqtool.commands.runs import (
    build_model,
    count_parameters,
    pack_tokenizer,
    pick_device,
    same_tokenizer,
    tokenizer_sha256,
)
from seqtool.commands.tasks import open_task, prepare_task
from seqtool.data.prepare import prepared_dir
from seqtool.errors import SeqtoolError, first_line
from seqtool.observe import Observer
from seqtool.training.checkpoint import CheckpointDir, check_resumable, load_checkpoint
from seqtool.training.distributed import DistInfo, barrier, init_distributed
from seqtool.training.trainer import ForcedStop, Stopped, Trainer
from seqtool.util.oom import out_of_memory_hint
from seqtool.util.ownership import claim_run_dir, run_lock
from seqtool.util.precision import check_precision

__all__ = ["ForcedStop", "Stopped", "seed_everything", "train_recipe"]

_MAY_CHANGE = ("train", "log", "eval", "decode", "output_dir")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def train_recipe(recipe: Recipe, *, resume: bool = False) -> dict:
    """Train a recipe in its run directory; returns the final test (or validation) metrics and where the
    time went (seconds: start-up, then train / validate / save inside the loop, then the test report)."""
    device = pick_device(recipe.train.device)
    check_precision(recipe, device)
    dist_info = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    run_dir = Path(recipe.run_dir())
    if resume and not (run_dir / "checkpoints" / "latest.pt").exists():
        raise SeqtoolError(f"{run_dir}: nothing to resume (no checkpoints/latest.pt)")
    parent = None if resume else load_parent(recipe)  # refused before the run directory is made
    try:
        if not dist_info.main:
            return _train(recipe, run_dir, resume, device, dist_info, parent)
        claim_run_dir(run_dir)
        with run_lock(run_dir):  # held until the run ends, so a second train here fails at once
            return _train(recipe, run_dir, resume, device, dist_info, parent)
    finally:
        # After _train has let go of the DDP model: a Reducer freed after the process group was destroyed
        # drops the group's last reference, whose destructor joins gloo threads that wait for the GIL it holds.
        if dist_info.world > 1:
            torch.distributed.destroy_process_group()


def _train(recipe: Recipe, run_dir: Path, resume: bool, device: torch.device, dist_info: DistInfo,
           parent: dict | None) -> dict:
    started = time.perf_counter()
    latest = run_dir / "checkpoints" / "latest.pt"
    payload = _checked_payload(recipe, run_dir, latest, resume)
    # a fine-tuned run encodes with its parent's tokenizer, which its own checkpoints carry too
    tokenizer = (payload or parent).get("tokenizer", {}) if recipe.train.init_from is not None else None
    task = _prepare_task(recipe, run_dir, dist_info, device, payload, latest, tokenizer)
    seed_everything(recipe.seed)
    sizes = task.sizes()
    model = build_model(recipe, sizes).to(device)
    observer = Observer(run_dir, recipe.log, enabled=dist_info.main, total=recipe.train.max_steps,
                        resume_step=payload["trainer"]["step"] if payload else None)
    spec = recipe.train.checkpoint
    tokenizer_files = pack_tokenizer(task.directory / "tokenizer")
    extra = {"recipe": recipe.model_dump(mode="json"), "sizes": {"src": sizes.src, "tgt": sizes.tgt},
             "tokenizer": tokenizer_files, "tokenizer_sha256": tokenizer_sha256(tokenizer_files)}
    checkpoints = CheckpointDir(run_dir / "checkpoints", spec.keep_last, spec.keep_best)
    trainer = Trainer(recipe, model, task, observer, checkpoints,
                      device=device, dist_info=dist_info, extra_payload=extra)
    if payload is not None:
        _resume(trainer, payload, latest, extra, observer)
    elif parent is not None:
        _start_from(trainer, parent, recipe, observer)
    observer.info(f"{recipe.name}: {recipe.model.arch} with {count_parameters(model):,} parameters on {device}"
                  f"{f' x{dist_info.world} ranks' if dist_info.world > 1 else ''}; run dir {run_dir}")
    try:
        with out_of_memory_hint("training", "train.batch_tokens (train.batch_size for streams and sequences)"):
            state = trainer.train(startup=time.perf_counter() - started)
        observer.info(f"finished at step {state.step} (epoch {state.epoch}); best {recipe.train.early_stopping.metric} "
                      f"{state.best_value} at step {state.best_step}; {state.skipped_steps} steps skipped")
        if not dist_info.main:
            return {}
        seconds, reported = trainer.time_split(), time.perf_counter()
        result = _final_report(recipe, trainer, task, observer, dist_info)
        return {**result, "seconds": {**seconds, "test": round(time.perf_counter() - reported, 1)}}
    finally:
        observer.close()


def _checked_payload(recipe: Recipe, run_dir: Path, latest: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from, refused before any work when it cannot continue this recipe."""
    if not resume:
        if latest.exists():
            raise SeqtoolError(f"{run_dir}: already holds a trained run; continue it with --resume, or set "
                               "output_dir to a new directory")
        return None
    payload = load_checkpoint(latest)
    check_resumable(latest, payload)
    if payload["recipe"].get("model") != recipe.model_dump(mode="json")["model"]:
        raise SeqtoolError(f"{latest}: the checkpoint's model section differs from the recipe's; "
                           "resume needs the same architecture")
    return payload


def _prepare_task(recipe: Recipe, run_dir: Path, dist_info: DistInfo, device: torch.device,
                  payload: dict | None, latest: Path, tokenizer: dict | None):
    """Rank 0 prepares (a no-op when up to date) and writes the run's recipe; others wait for it. A
    resume refuses data with another tokenizer than the checkpoint's before it replaces the prepared
    data or recipe.yaml, so a refused resume changes nothing."""
    def check_tokenizer(directory: Path) -> None:
        if not same_tokenizer(directory, payload):
            raise SeqtoolError(f"{latest}: the checkpoint was trained with another tokenizer; resume needs the "
                               "same data")

    if dist_info.main:
        prepare_task(recipe, log=lambda m: print(m, file=sys.stderr),
                     verify=check_tokenizer if payload is not None else None, tokenizer=tokenizer)
        dump_recipe(recipe, run_dir / "recipe.yaml")
    barrier(dist_info)
    return open_task(recipe, device, directory=prepared_dir(recipe), rank=dist_info.rank, world=dist_info.world)


def _resume(trainer: Trainer, payload: dict, latest: Path, extra: dict, observer: Observer) -> None:
    saved = drop_retired(payload["recipe"])
    for key in sorted(set(saved) | set(extra["recipe"])):
        if key not in _MAY_CHANGE and saved.get(key) != extra["recipe"].get(key):
            observer.info(f"warning: recipe key {key!r} differs from the checkpoint's; the checkpoint's data "
                          "order and seed continue")
    try:
        trainer.load_state(payload)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # state of another seqtool, or damaged
        raise SeqtoolError(f"{latest}: cannot resume from this checkpoint ({first_line(err)})") from None
    trainer.ckpt.latest_step = trainer.state.step
    observer.truncate_after(trainer.state.step)
    observer.info(f"resumed from {latest} at step {trainer.state.step} (epoch {trainer.state.epoch})")


def _start_from(trainer: Trainer, parent: dict, recipe: Recipe, observer: Observer) -> None:
    keep = {"optimizer", "schedule", "best", "progress"} - set(recipe.train.init_reset)
    try:
        trainer.start_from(parent, keep)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # state of another seqtool, or damaged
        raise SeqtoolError(f"train.init_from: {recipe.train.init_from}: cannot start from this checkpoint "
                           f"({first_line(err)})") from None
    observer.info(f"fine-tuning from {recipe.train.init_from} (step {parent.get('trainer', {}).get('step')}); "
                  f"kept: {', '.join(sorted(keep)) or 'weights only'}")


def _final_report(recipe: Recipe, trainer: Trainer, task, observer: Observer, dist_info: DistInfo) -> dict:
    """Test metrics of the best checkpoint (the final weights when none is kept), and a few samples."""
    best = trainer.ckpt.directory / "best.pt"
    if best.exists():
        trainer.model.load_state_dict(load_checkpoint(best)["model"])
    trainer.model.eval()
    split = "test" if task.data.corpus_splits("test") else "valid"
    settings = recipe.decode
    with out_of_memory_hint(f"evaluating on {split}", "decode.batch_tokens or decode.beam"):
        metrics = task.evaluate(trainer.model, split, settings)
    observer.info(f"{split} ({'best' if best.exists() else 'final'} checkpoint): "
                  + " ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    for sample in task.samples(trainer.model, split, settings, count=3):
        observer.info(sample)
    private = trainer.privacy_report()
    if private:
        observer.info(f"privacy: ({private['epsilon']:.4g}, {recipe.train.privacy.delta:g})-DP after "
                      f"{trainer.state.step} steps, noise multiplier {private['sigma']:.4g}")
    return {"split": split, **metrics, **private}
