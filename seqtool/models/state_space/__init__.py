"""State-space sequence models: the parallel scan of a diagonal linear recurrence (scan.py) and S5
(s5.py: the layer, a language model, a sequence model and a sequence classifier)."""
