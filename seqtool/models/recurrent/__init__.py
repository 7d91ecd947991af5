"""Recurrent models: registered cells (cells.py, orthogonal.py, arma.py, state_reg.py) and norms (norms.py),
the stacks built from them (layers.py), and the models: recurrent LMs and attentional seq2seq (rnn.py),
GNMT (gnmt.py), per-step sequence models (sequence.py), sequence classifiers (classifier.py), the
renormalizing nondeterministic stack RNN (rns.py)."""
