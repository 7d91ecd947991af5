"""`seqtool quantize`: int8 against fp32 decoding of a translation run on its validation split (BLEU and
sentences/s at the recipe's beam, both measured back to back on one CPU thread budget), then the int8
model written, or refused (exit 2, one line) when int8 loses more than --max-drop BLEU. Beside the
wall-clock speed-up it reports the ratio of the process's CPU seconds (cpu_speedup), which other jobs
on a shared machine barely move when decoding runs on one thread.

The int8 model file is the float checkpoint with decode.precision set to int8: loading it quantizes
(seqtool/decoding/int8.py), so it stays a weights_only checkpoint and never holds pickled modules.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from seqtool.commands.evaluate import run_data
from seqtool.commands.runs import checkpoint_path, load_translation_run
from seqtool.commands.tasks import open_task
from seqtool.errors import SeqtoolError
from seqtool.evaluation.metrics import corpus_metrics
from seqtool.recipe.overrides import merged
from seqtool.training.checkpoint import load_checkpoint, save_checkpoint

KEPT = ("recipe", "model", "sizes", "tokenizer", "tokenizer_sha256", "trainer")  # no optimizer: not resumable


def measure(target: Path, precision: str, overrides: dict, split: str) -> dict:
    """BLEU and decoding speed of the run's `split` (eval.valid_decode_limit sentences) in `precision`."""
    run = load_translation_run(target, merged(overrides, {"decode": {"precision": precision}}), "cpu", "quantize")
    task = open_task(run.recipe, torch.device("cpu"), directory=run_data(run))
    settings = run.recipe.decode.model_copy(update={"n_best": 1, "strategy": "beam"})
    started, cpu = time.perf_counter(), time.process_time()
    hyps, refs = task.decode_split(run.model, split, settings, run.recipe.eval.valid_decode_limit)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    bleu = corpus_metrics(hyps, refs, ["bleu"], run.recipe.eval.tokenize)["bleu"].score
    return {"bleu": bleu, "sentences": len(hyps), "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 4),
            "sentences_per_s": round(len(hyps) / seconds, 2), "beam": settings.beam}


def quantize_run(target: Path, output: Path | None, max_drop: float, overrides: dict, split: str = "valid") -> dict:
    """Measure both precisions, then write the int8 model (default RUN/checkpoints/int8.pt) if BLEU holds."""
    path = checkpoint_path(Path(target))
    if output is None:
        if path.parent.name != "checkpoints":
            raise SeqtoolError(f"{path}: a checkpoint outside a run; name the int8 model with --output")
        output = path.parent / "int8.pt"
    if Path(output).resolve() == path.resolve():
        raise SeqtoolError(f"{output}: the checkpoint being quantized; write the int8 model to a new file")
    fp32, int8 = (measure(path, p, overrides, split) for p in ("fp32", "int8"))
    drop = fp32["bleu"] - int8["bleu"]
    result = {"checkpoint": str(path), "split": split, "fp32": fp32, "int8": int8, "bleu_drop": round(drop, 2),
              "speedup": round(int8["sentences_per_s"] / fp32["sentences_per_s"], 2),
              "cpu_speedup": round(fp32["cpu_seconds"] / max(int8["cpu_seconds"], 1e-4), 2)}
    if drop > max_drop:
        raise SeqtoolError(f"{path}: int8 loses {drop:.2f} BLEU on {split} ({fp32['bleu']:.2f} -> "
                           f"{int8['bleu']:.2f}), more than --max-drop {max_drop}; no int8 model written")
    payload = {key: value for key, value in load_checkpoint(path).items() if key in KEPT}
    payload["recipe"] = merged(payload["recipe"], {"decode": {"precision": "int8"}})
    save_checkpoint(Path(output), payload)
    return {**result, "output": str(output)}
