"""Figures, drawn with matplotlib's Agg backend (no display needed) and written atomically as PNG.

    attention_heatmap   one sentence's attention: target pieces (rows) over source pieces (columns)

Only errors and util are imported from seqtool, so any command may draw with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqtool.util.files import atomic_open


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def attention_heatmap(weights: np.ndarray, source: list[str], target: list[str], path: Path, title: str = "") -> None:
    """A heatmap of (len(target), len(source)) attention weights, labelled with the pieces."""
    plt = _pyplot()
    rows, cols = weights.shape
    figure, axes = plt.subplots(figsize=(min(2 + 0.35 * cols, 40), min(1.5 + 0.3 * rows, 40)))
    try:
        image = axes.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        axes.set_xticks(range(cols), source, rotation=90, fontsize=8)
        axes.set_yticks(range(rows), target, fontsize=8)
        axes.set_xlabel("source")
        axes.set_ylabel("target")
        if title:
            axes.set_title(title, fontsize=9)
        figure.colorbar(image, ax=axes, fraction=0.04)
        figure.tight_layout()
        with atomic_open(path, "wb") as handle:
            figure.savefig(handle, format="png", dpi=100)
    finally:
        plt.close(figure)
