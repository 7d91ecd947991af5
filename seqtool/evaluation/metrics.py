"""Corpus metrics through sacrebleu (Post 2018), on detokenized text, with their signatures."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class MetricResult:
    name: str
    score: float
    signature: str
    text: str  # sacrebleu's own one-line summary, e.g. "BLEU = 35.1 67.2/41.0/..."


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


def corpus_metrics(hypotheses: list[str], references: list[str], metrics: list[str],
                   tokenize: str = "13a") -> dict[str, MetricResult]:
    """BLEU / chrF / TER with sacrebleu's defaults (BLEU's tokenizer configurable)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    builders = {"bleu": lambda: BLEU(tokenize=tokenize), "chrf": CHRF, "ter": TER}
    results = {}
    for name in metrics:
        metric = builders[name]()
        score = metric.corpus_score(hypotheses, [references])
        signature = str(metric.get_signature())
        results[name] = MetricResult(name, float(score.score), signature, score.format(signature=signature))
    return results


def perplexity(nll_sum: float, count: int) -> float:
    """exp(total NLL / count); inf when it overflows."""
    try:
        return math.exp(nll_sum / max(count, 1))
    except OverflowError:
        return float("inf")
