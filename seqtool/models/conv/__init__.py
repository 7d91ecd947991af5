"""Convolutional models: weight-normed windowed convolutions and gates (layers.py), the gated
convolutional LM (gcnn.py) and convolutional seq2seq (convs2s.py)."""
