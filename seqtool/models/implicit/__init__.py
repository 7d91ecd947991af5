"""Implicit models: root solvers (solvers.py), implicit differentiation of an equilibrium
(equilibrium.py) and the deep equilibrium language model (deq.py)."""
