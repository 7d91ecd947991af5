"""Training throughput of a recipe: target tokens/s, peak memory, padding, and matmul-peak fraction.

    python bench/train.py recipes/lstm-attn-multi30k.yaml --steps 30 [--set model.hidden_dim=256]

Runs `--warmup` untimed steps and `--steps` timed ones of the real trainer (no validation, no
checkpoints), counts the FLOPs of one step (matmuls via torch's FlopCounterMode, recurrent layers
from their shapes since the fused RNN kernels are not counted there), and times a large matmul in
the step's precision (fp32, or bf16 where the recipe autocasts) in the same process to report the
fraction of the machine's peak a step reaches.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seqtool.commands.recipes import load_recipe  # noqa: E402
from seqtool.commands.runs import build_model, count_parameters, pick_device  # noqa: E402
from seqtool.commands.tasks import open_task  # noqa: E402
from seqtool.commands.train import seed_everything  # noqa: E402
from seqtool.data.batching import padding_fraction  # noqa: E402
from seqtool.observe import Observer  # noqa: E402
from seqtool.training.checkpoint import CheckpointDir  # noqa: E402
from seqtool.training.trainer import Trainer  # noqa: E402
from seqtool.util.precision import compute_dtype  # noqa: E402


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large matmul in `dtype` (the step's autocast dtype) on this device, now."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def recurrent_flops(model: torch.nn.Module, tokens_by_module: dict) -> float:
    """Forward + backward FLOPs of torch RNN layers: gates x 2 x H x (I + H) per token, x3 for backward."""
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}
    total = 0.0
    for module, tokens in tokens_by_module.items():
        for layer in range(module.num_layers):
            in_dim = module.input_size if layer == 0 else module.hidden_size * (1 + module.bidirectional)
            per_token = gates[type(module).__name__] * 2 * module.hidden_size * (in_dim + module.hidden_size)
            total += 3 * per_token * tokens * (1 + module.bidirectional)
    return total


def count_step_flops(trainer: Trainer) -> float:
    tokens: dict = {}
    hooks = [m.register_forward_hook(lambda mod, inp, _out: tokens.__setitem__(mod, tokens.get(mod, 0)
                                                                                + inp[0].shape[0] * inp[0].shape[1]))
             for m in trainer.model.modules() if isinstance(m, torch.nn.RNNBase)]
    with FlopCounterMode(display=False) as counter:
        trainer.step()
    for hook in hooks:
        hook.remove()
    return counter.get_total_flops() + recurrent_flops(trainer.model, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--data-dir", help="reuse a prepared data directory")
    parser.add_argument("--precisions", help="e.g. fp32,bf16: each in turn in this process, and their speed ratio")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [f"output_dir={tmp}/run", *args.overrides]
        if args.data_dir:
            overrides.append(f"data.prepared_dir={args.data_dir}")
        if not args.precisions:
            print(json.dumps(run(load_recipe(args.recipe, overrides), args.steps, args.warmup)))
            return
        rows = [run(load_recipe(args.recipe, [*overrides, f"train.precision={p}"]), args.steps, args.warmup)
                for p in args.precisions.split(",")]
        speed = {r["precision"]: r["tokens_per_s"] for r in rows}
        print(json.dumps({"rows": rows, "speed_vs_first": {k: v / rows[0]["tokens_per_s"] for k, v in speed.items()}}))


def run(recipe, steps: int, warmup: int) -> dict:
    device = pick_device(recipe.train.device)
    if recipe.train.threads:
        torch.set_num_threads(recipe.train.threads)
    task = open_task(recipe, device, log=lambda m: print(m, file=sys.stderr))
    seed_everything(recipe.seed)
    model = build_model(recipe, task.sizes()).to(device)
    trainer = Trainer(recipe, model, task, Observer(None, recipe.log, enabled=False),
                      CheckpointDir(Path(recipe.run_dir()) / "checkpoints", 1, 0), device=device)
    for _ in range(warmup):
        trainer.step()
    flops = count_step_flops(trainer)
    _sync(device)
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += trainer.step()[0]
    _sync(device)
    seconds = time.perf_counter() - start
    dtype = compute_dtype(recipe.train.precision, device)
    peak = matmul_peak(device, dtype)
    result = {"recipe": recipe.name, "device": str(device), "threads": torch.get_num_threads(),
              "precision": str(dtype).removeprefix("torch."),
              "parameters": count_parameters(model), "steps": steps, "tokens_per_s": tokens / seconds,
              "step_ms": 1000 * seconds / steps, "tokens_per_step": tokens / steps,
              "step_gflop": flops / 1e9, "achieved_gflops": flops * steps / seconds / 1e9,
              "matmul_peak_gflops": peak / 1e9, "peak_fraction": flops * steps / seconds / peak,
              "peak_memory_mb": _peak_memory_mb(device)}
    if recipe.task == "translation":
        split = task.split("train")
        result["padding_fraction"] = padding_fraction(task.epoch_batches(0), split.src.lengths(), split.tgt.lengths())
    return result


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
