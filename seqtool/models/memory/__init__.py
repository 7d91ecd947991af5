"""Memory networks: end-to-end memory networks for bAbI and language modelling (memn2n.py)."""
