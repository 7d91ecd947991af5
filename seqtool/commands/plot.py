"""`seqtool plot`: training curves of one or more runs, from their metrics.jsonl (seqtool/observe.py):
training loss and learning rate (every logged training step) and each validation metric, against
steps or training time (each record's `elapsed` seconds), runs overlaid; PNG files in a directory,
or a text chart of the training loss on stdout.

A PNG is replaced only when seqtool drew it (its metadata), never another file of the same name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from seqtool.errors import SeqtoolError
from seqtool.plots import made_by_seqtool, terminal_chart, training_curves

Series = dict[str, list[tuple[float, float]]]


def read_metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SeqtoolError(f"{run}: no metrics.jsonl (not a seqtool run, or nothing logged yet)")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                records.append((float(record["step"]), record))
            except (ValueError, KeyError, TypeError):
                if line.endswith("\n"):  # a last line cut off by a running writer is skipped
                    raise SeqtoolError(f"{path}:{number}: not a metrics record") from None
    if not records:
        raise SeqtoolError(f"{path}: no metrics logged yet")
    return [record for _, record in records]


AXES = {"steps": ("step", "step"), "time": ("elapsed", "training time (s)")}  # --x: record key, axis label
NOT_METRICS = ("step", "split", "elapsed")


def curves(runs: dict[str, list[dict]], x: str = "steps") -> dict[str, Series]:
    """quantity name -> run label -> (x, value), for train loss, lr and every valid metric."""
    key_x = AXES[x][0]
    out: dict[str, Series] = {}
    for label, records in runs.items():
        for record in records:
            split = record.get("split")
            keys = ("loss", "lr") if split == "train" else [k for k in record if k not in NOT_METRICS]
            for key in keys if split in ("train", "valid") else ():
                value = record.get(key)
                if isinstance(value, (int, float)):
                    out.setdefault(f"{split}_{key}", {}).setdefault(label, []).append((record[key_x], value))
    return out


def timed(run: Path, records: list[dict]) -> list[dict]:
    """The records, refused in one line when a run was logged before metrics carried training time."""
    if any("elapsed" not in record for record in records):
        raise SeqtoolError(f"{run / 'metrics.jsonl'}: records without 'elapsed' (logged before seqtool recorded "
                           "training time); plot it with --x steps")
    return records


def labels_for(runs: list[Path]) -> list[str]:
    names = [run.name for run in runs]
    return names if len(set(names)) == len(names) else [str(run) for run in runs]


def plot_runs(runs: list[Path], output: Path | None, *, print_: Callable[[str], None],
              x: str = "steps") -> list[Path]:
    """PNGs of every quantity into `output` (NAME.png against steps, NAME_time.png against training time),
    or (output None) the training loss as a text chart."""
    if x not in AXES:
        raise SeqtoolError(f"--x {x}: expected one of {', '.join(AXES)}")
    records = [read_metrics(run) for run in runs]
    if x == "time":
        records = [timed(run, run_records) for run, run_records in zip(runs, records)]
    data = curves(dict(zip(labels_for(runs), records)), x)
    xlabel = AXES[x][1]
    if output is None:
        print_(terminal_chart(data.get("train_loss") or next(iter(data.values())), xlabel=xlabel))
        return []
    if output.exists() and not output.is_dir():
        raise SeqtoolError(f"--output: {output} is not a directory")
    suffix = "_time" if x == "time" else ""
    paths = {name: output / f"{name}{suffix}.png" for name in data}
    for path in paths.values():
        if path.exists() and not (path.is_file() and made_by_seqtool(path)):
            raise SeqtoolError(f"--output: {path} exists and was not drawn by seqtool; choose another directory")
    for name, series in data.items():
        training_curves(series, paths[name], name.replace("_", " "), xlabel=xlabel,
                        log_y=name in ("train_loss", "valid_ppl"))
    return list(paths.values())
