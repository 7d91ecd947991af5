"""`seqtool score`: sacrebleu metrics of a hypothesis file against a reference file."""

from __future__ import annotations

from pathlib import Path

from seqtool.data.textio import iter_lines
from seqtool.errors import SeqtoolError
from seqtool.evaluation.metrics import MetricResult, corpus_metrics
from seqtool.metric_table import TEXT_METRICS, tokenizer_problem


def score_files(hypothesis: Path, reference: Path, metrics: list[str],
                tokenize: str = "13a") -> dict[str, MetricResult]:
    unknown = [m for m in metrics if m not in TEXT_METRICS]
    if unknown or not metrics:
        raise SeqtoolError(f"--metrics: unknown metric {', '.join(unknown) or '(none)'} "
                           f"(known: {', '.join(TEXT_METRICS)})")
    problem = tokenizer_problem(tokenize) if "bleu" in metrics else None
    if problem:
        raise SeqtoolError(f"--tokenize {tokenize}: {problem}")
    hyps, refs = list(iter_lines(hypothesis, hint="")), list(iter_lines(reference, hint=""))
    if len(hyps) != len(refs):
        raise SeqtoolError(f"{hypothesis} has {len(hyps)} lines but {reference} has {len(refs)}: "
                           "hypotheses and references must be line-aligned")
    if not refs:
        raise SeqtoolError(f"{reference}: empty file")
    try:
        return corpus_metrics(hyps, refs, metrics, tokenize)
    except (KeyError, ValueError, RuntimeError) as err:
        raise SeqtoolError(f"sacrebleu: {err}") from None
