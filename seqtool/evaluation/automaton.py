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

import numpy as np
import torch

from seqtool.data.formal import DFA
from seqtool.errors import SeqtoolError
from seqtool.models.base import FiniteStateModel


@torch.no_grad()
def extract(model) -> DFA:
    """The automaton of the network's reachable states; state 0 is the start (h = 0)."""
    if not isinstance(model, FiniteStateModel) or not model.is_automaton():
        raise SeqtoolError("automaton extraction needs an rnn_sequence model with one sr_gru layer and "
                           "hard_eval: true (an SR-LSTM's memory cell is not finite)")
    model.eval()
    vectors = [model.start_state()]
    ids, delta, queue = {}, {}, [0]
    while queue:
        state = queue.pop(0)
        row = []
        for centroid in model.next_states(vectors[state].unsqueeze(0))[0].tolist():
            if centroid not in ids:
                ids[centroid] = len(vectors)
                vectors.append(model.state_vector(centroid))
                queue.append(ids[centroid])
            row.append(ids[centroid])
        delta[state] = tuple(row)
    labels = model.label_states(torch.stack(vectors)).tolist()
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
