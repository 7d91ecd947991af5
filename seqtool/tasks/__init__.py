"""Tasks turn prepared data into training batches and measure models on held-out splits.

Each task module registers its class in TASKS; recipes name it with `task:`.
"""

from seqtool.registry import TASKS
from seqtool.tasks import classify, lm, qa, sequence, translation  # noqa: F401  (sequence: synthetic, music)

__all__ = ["TASKS"]
