"""Convolutional models: weight-normed windowed convolutions and gates (layers.py), the gated
convolutional LM (gcnn.py), convolutional seq2seq (convs2s.py) and the circular dilated classifier (cdil.py)."""
