"""Every metric name seqtool reports or selects on, with its direction: one table for the recipe
schema (which names early stopping and eval may use), the trainer (which way is better) and scoring.

A ground module (no imports from seqtool), so every layer may read it.
"""

from __future__ import annotations

from typing import Literal

HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "accuracy": True, "loss": False, "ppl": False, "ter": False}

# The names a recipe may pick; the literals are spelled out because typing needs them at class creation.
SelectMetric = Literal["loss", "ppl", "bleu", "chrf", "accuracy"]  # train.early_stopping.metric
TextMetric = Literal["bleu", "chrf", "ter"]  # sacrebleu metrics of decoded text (eval.metrics, `score`)
TEXT_METRICS: tuple[str, ...] = TextMetric.__args__


def better(metric: str, a: float, b: float) -> bool:
    """Whether value a of `metric` beats value b."""
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def tokenizer_problem(name: str) -> str | None:
    """Why sacrebleu cannot tokenize BLEU with `name` on this machine, or None; some tokenizers need
    extra packages or download a model, which would otherwise fail only at the first validation."""
    from sacrebleu.metrics import BLEU

    if name not in BLEU.TOKENIZERS:
        return f"not a sacrebleu tokenizer (known: {', '.join(BLEU.TOKENIZERS)})"
    try:
        BLEU(tokenize=name)
    except (ImportError, OSError, RuntimeError) as err:
        return f"sacrebleu cannot load it ({' '.join(str(err).split())[:160]})"
    return None
