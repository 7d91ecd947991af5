"""`seqtool automaton`: the finite automaton inside a trained state-regularized GRU (Wang and Niepert 2019).

In evaluation mode an SR-GRU with `hard_eval` is always in one of k centroid states (or the zero start
state), and its next state is a function of the state and the symbol only. Its automaton is read off
exactly by breadth-first search from the start state, stepping the network on every symbol from every
reached state; a state accepts when the classifier labels the state vector 1. (The paper counts
transitions on training strings and takes the majority; for a deterministic network both give the same
automaton on the reached part, and the search needs no data.) For a Tomita task the extracted automaton
is then minimized and compared with the grammar's: equal languages, or a shortest word they disagree on.
The network labels a string only after reading a symbol, so it says nothing about the empty string: the
start state (h = 0, never a centroid, so never re-entered) takes the grammar's label of ε, which changes
the automaton's answer on ε alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seqtool.data.formal import DFA, TOMITA, counterexample, minimize
from seqtool.errors import SeqtoolError
from seqtool.evaluation.evaluate import run_data
from seqtool.models.state_reg import StateRegularizedCell
from seqtool.runs import load_run, pick_device
from seqtool.tasks import TASKS


def _checked_layer(model) -> StateRegularizedCell:
    rnn = getattr(model, "rnn", None)
    layer = rnn.layers[0] if rnn is not None and len(rnn.layers) == 1 else None
    if not isinstance(layer, StateRegularizedCell) or layer.core != 1 or not layer.hard_eval:
        raise SeqtoolError("automaton extraction needs an rnn_sequence model with one sr_gru layer and "
                           "hard_eval: true (an SR-LSTM's memory cell is not finite)")
    return layer


@torch.no_grad()
def extract(model) -> DFA:
    """The automaton of the network's reachable states; state 0 is the start (h = 0)."""
    layer = _checked_layer(model)
    model.eval()
    symbols = model.embed.in_features if model.embed is not None else layer.input_dim
    vectors = [torch.zeros(layer.hidden_dim, device=layer.centroids.device)]
    ids, delta, queue = {}, {}, [0]
    while queue:
        state = queue.pop(0)
        x = torch.eye(symbols, device=vectors[0].device).unsqueeze(1)  # (symbols, 1, F): every symbol once
        x = model.embed(x) if model.embed is not None else x
        h = vectors[state].expand(symbols, 1, -1)
        nxt = layer.assign(model.rnn(x, model.rnn.initial_state(h))[0][:, 0])
        row = []
        for centroid in nxt.tolist():
            if centroid not in ids:
                ids[centroid] = len(vectors)
                vectors.append(layer.centroids[centroid])
                queue.append(ids[centroid])
            row.append(ids[centroid])
        delta[state] = tuple(row)
    labels = model.out(torch.stack(vectors)).argmax(-1).tolist()
    return DFA(tuple(delta[s] for s in range(len(vectors))), tuple(bool(c == 1) for c in labels))


def split_agreement(task, model, dfa: DFA, split: str) -> dict[str, float]:
    """Accuracy of the network and of the automaton on a split's strings."""
    examples = task.split(split)
    metrics = task.evaluate(model, split)
    words = [np.asarray(examples.inputs[a:b]) for a, b in zip(examples.offsets[:-1], examples.offsets[1:])]
    labels = np.asarray([examples.targets[b - 1] for b in examples.offsets[1:]])
    by_dfa = np.asarray([dfa.run(w) for w in words])
    return {"network_accuracy": metrics["accuracy"], "automaton_accuracy": float((by_dfa == labels).mean())}


def format_dfa(dfa: DFA, title: str) -> str:
    lines = [f"{title}: {len(dfa.accept)} states, start 0; state: " + "  ".join(f"on {s}" for s in range(dfa.symbols))]
    for s, row in enumerate(dfa.delta):
        lines.append(f"  {s:>3}{'*' if dfa.accept[s] else ' '}  " + "  ".join(f"-> {n:<3}" for n in row))
    return "\n".join(lines) + "\n  (* accepting)\n"


def automaton_report(target: Path, split: str, device: str = "auto") -> str:
    run = load_run(target, {}, pick_device(device))
    extracted = extract(run.model)
    spec = run.recipe.data.synthetic
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
        task = TASKS.get(run.recipe.task).builder(run.recipe, run_data(run), pick_device(device))
        for key, value in split_agreement(task, run.model, extracted, split).items():
            text += f"{split} {key}\t{value:.4f}\n"
    return text
