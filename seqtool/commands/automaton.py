"""`seqtool automaton`: print the automaton inside a trained state-regularized GRU (see
seqtool/evaluation/automaton.py) and, for a Tomita task, compare it with the grammar's."""

from __future__ import annotations

from pathlib import Path

from seqtool.commands.evaluate import run_data
from seqtool.commands.runs import load_run, pick_device
from seqtool.commands.tasks import open_task
from seqtool.data.formal import DFA, TOMITA, counterexample, minimize
from seqtool.evaluation.automaton import extract, format_dfa, split_agreement


def automaton_report(target: Path, split: str, device: str = "auto") -> str:
    run = load_run(target, {}, pick_device(device))
    extracted = extract(run.model)
    spec = getattr(run.recipe.data, "synthetic", None)  # a Tomita grammar to compare with, if any
    tomita = spec is not None and spec.kind == "tomita"
    if tomita:
        truth = TOMITA[spec.grammar]
        extracted = DFA(extracted.delta, (truth.accept[0], *extracted.accept[1:]))
    minimal = minimize(extracted)
    text = format_dfa(extracted, "extracted") + format_dfa(minimal, "minimized")
    if tomita:
        word = counterexample(minimal, truth)
        verdict = "exact (same language)" if word is None else f"differs, e.g. on {''.join(map(str, word)) or 'ε'}"
        text += f"Tomita {spec.grammar}: minimal DFA {len(minimize(truth).accept)} states; extracted: {verdict}\n"
        task = open_task(run.recipe, pick_device(device), directory=run_data(run))
        for key, value in split_agreement(task, run.model, extracted, split).items():
            text += f"{split} {key}\t{value:.4f}\n"
    return text
