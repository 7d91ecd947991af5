"""Attention models: the Transformer encoder-decoder and language model (transformer.py)."""
