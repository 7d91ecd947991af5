"""`seqtool plot`: PNGs of two runs overlaid from their metrics.jsonl against steps and training time,
a text chart, and the refusals (a directory without metrics, a PNG seqtool did not draw, --x time on
records without training time)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from seqtool.commands.plot import plot_runs
from seqtool.errors import SeqtoolError
from seqtool.plots import made_by_seqtool
from tests.conftest import run_cli


def fake_run(path: Path, scale: float, timed: bool = True) -> Path:
    """A run directory's metrics.jsonl as the trainer writes it: training lines and two validations,
    `scale` seconds a step (without `elapsed` as runs logged before it was recorded, when not timed)."""
    path.mkdir()
    lines = [{"step": s, "split": "train", "loss": scale * 5 / s, "ppl": 2.0, "lr": 1e-3 * min(1, s / 4),
              "tokens_per_s": 900.0} for s in range(1, 21)]
    lines += [{"step": s, "split": "valid", "bleu": s * scale} for s in (10, 20)]
    if timed:
        lines = [{**line, "elapsed": line["step"] * scale} for line in lines]
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_two_runs_overlaid_in_one_png_per_quantity(tmp_path):
    runs = [fake_run(tmp_path / "a", 1.0), fake_run(tmp_path / "b", 2.0)]
    written = plot_runs(runs, tmp_path / "plots", print_=print)
    assert sorted(p.name for p in written) == ["train_loss.png", "train_lr.png", "valid_bleu.png"]
    assert all(made_by_seqtool(p) and p.stat().st_size > 5000 for p in written)
    assert plot_runs(runs, tmp_path / "plots", print_=print) == written  # its own PNGs are replaced


def test_the_terminal_chart_shows_both_runs_and_the_ranges(tmp_path):
    runs = [fake_run(tmp_path / "a", 1.0), fake_run(tmp_path / "b", 2.0)]
    printed = []
    plot_runs(runs, None, print_=printed.append)
    chart = printed[0].splitlines()
    assert chart[0].lstrip().startswith("10 |") and "0.25 |" in chart[11]  # max 2*5/1, min 1*5/20
    assert "* a" in chart[-2] and "+ b" in chart[-1]
    assert any("*" in line and "+" in line for line in chart[:12])


def test_time_plots_are_named_apart_and_span_each_runs_seconds(tmp_path):
    runs = [fake_run(tmp_path / "a", 1.0), fake_run(tmp_path / "b", 2.0)]
    by_time = plot_runs(runs, tmp_path / "plots", print_=print, x="time")
    assert sorted(p.name for p in by_time) == ["train_loss_time.png", "train_lr_time.png", "valid_bleu_time.png"]
    assert all(made_by_seqtool(p) for p in by_time)
    printed = []
    plot_runs(runs, None, print_=printed.append, x="time")
    assert "training time (s) 1" in printed[0] and printed[0].splitlines()[13].endswith("40")  # b: 20 steps of 2 s


def test_time_needs_records_with_elapsed(tmp_path):
    old = fake_run(tmp_path / "old", 1.0, timed=False)
    printed = []
    plot_runs([old], None, print_=printed.append)  # steps still work
    assert "step 1" in printed[0]
    out = run_cli("plot", "old", "--terminal", "--x", "time", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("seqtool: error: old/metrics.jsonl: records without 'elapsed'")
    with pytest.raises(SeqtoolError, match="--x hours: expected one of steps, time"):
        plot_runs([old], None, print_=print, x="hours")


def test_a_png_seqtool_did_not_draw_is_kept(tmp_path):
    run = fake_run(tmp_path / "a", 1.0)
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "train_lr.png").write_bytes(b"someone's figure")
    with pytest.raises(SeqtoolError, match="not drawn by seqtool"):
        plot_runs([run], tmp_path / "plots", print_=print)
    assert (tmp_path / "plots" / "train_lr.png").read_bytes() == b"someone's figure"


def test_a_directory_without_metrics_fails_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    out = run_cli("plot", "empty", "--terminal", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr == "seqtool: error: empty: no metrics.jsonl (not a seqtool run, or nothing logged yet)\n"
