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
