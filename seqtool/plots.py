"""Figures, drawn with matplotlib's Agg backend (no display needed) and written atomically as PNG.

    attention_heatmap   one sentence's attention: target pieces (rows) over source pieces (columns)
    training_curves     one quantity (training loss, learning rate, a validation metric) against
                        steps or time, several runs overlaid
    terminal_chart      the same as a few lines of text, for a terminal

Only errors and util are imported from seqtool, so any command may draw with it. A PNG written here
carries `Software: seqtool` in its metadata, which `made_by_seqtool` reads before one is replaced.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqtool.util.files import atomic_open

SOFTWARE = "seqtool"


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
        _save(figure, path)
    finally:
        plt.close(figure)


def made_by_seqtool(path: Path) -> bool:
    """Whether a PNG carries the Software text chunk these figures are written with."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    return head.startswith(b"\x89PNG") and b"Software\x00" + SOFTWARE.encode() in head


def training_curves(series: dict[str, list[tuple[float, float]]], path: Path, ylabel: str, *,
                    xlabel: str = "step", log_y: bool = False) -> None:
    """One line per run (label -> (x, value) points), sharing axes."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4))
    try:
        for label, points in series.items():
            steps, values = zip(*points)
            axes.plot(steps, values, label=label, marker="o" if len(points) < 20 else None)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        if log_y:
            axes.set_yscale("log")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        _save(figure, path)
    finally:
        plt.close(figure)


def terminal_chart(series: dict[str, list[tuple[float, float]]], *, width: int = 60, height: int = 12,
                   xlabel: str = "step") -> str:
    """A text chart: one mark per run (*, +, o, ...) in a width x height grid, with
    the value range on the left and the x range (steps or seconds) below."""
    points = [p for run in series.values() for p in run]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    grid = [[" "] * width for _ in range(height)]
    marks = "*+ox#@%&"
    for number, run in enumerate(series.values()):
        for x, y in run:
            col = round((x - x0) / ((x1 - x0) or 1) * (width - 1))
            row = round((y1 - y) / ((y1 - y0) or 1) * (height - 1))
            grid[row][col] = marks[number % len(marks)]
    labels = [f"{y1:.4g}"] + [""] * (height - 2) + [f"{y0:.4g}"]
    pad = max(len(label) for label in labels)
    lines = [f"{label:>{pad}} |{''.join(row)}" for label, row in zip(labels, grid)]
    lines.append(" " * pad + " +" + "-" * width)
    start = f"{xlabel} {x0:g}"
    lines.append(" " * pad + f"  {start}" + f"{x1:g}".rjust(width - len(start)))
    lines += [f"  {marks[n % len(marks)]} {label}" for n, label in enumerate(series)]
    return "\n".join(lines)


def _save(figure, path: Path) -> None:
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", dpi=100, metadata={"Software": SOFTWARE})
