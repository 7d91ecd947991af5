"""Fixtures of the reliability tests: a tiny trained run, a small parallel corpus on disk, and real
small filesystems for full-disk and read-only tests (tmpfs mounts inside the test's tmp_path; root only,
the tests that need them skip where mounting is not permitted)."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import TINY_TRANSLATION, run_cli


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny trained run, shared by the checkpoint and translate cases."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.yaml").write_text(TINY_TRANSLATION)
    out = run_cli("train", "tiny.yaml", "--set", "train.max_steps=10", cwd=root)
    assert out.returncode == 0, out.stderr
    return root


@pytest.fixture
def corpus(tmp_path, monkeypatch) -> Path:
    """A small parallel corpus under a data root, and a recipe that reads it."""
    root = tmp_path / "data"
    root.mkdir()
    pairs = [(f"{i} {i + 1} {i + 2}", f"n{i} n{i + 1}") for i in range(40)]
    for split in ("train", "valid"):
        (root / f"{split}.src").write_text("".join(p[0] + "\n" for p in pairs))
        (root / f"{split}.tgt").write_text("".join(p[1] + "\n" for p in pairs))
    recipe = TINY_TRANSLATION.replace(
        "  generate: {task: num2words, train: 1500, valid: 60, test: 60, max_digits: 3}",
        "  train: {src: train.src, tgt: train.tgt}\n  valid: {src: valid.src, tgt: valid.tgt}")
    (tmp_path / "r.yaml").write_text(recipe)
    monkeypatch.setenv("SEQTOOL_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def tmpfs():
    """`tmpfs(path, size)` mounts a tmpfs of `size` (e.g. "700k") on `path`; unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=True)


def read_only(path: Path) -> None:
    """Remount a tmpfs mounted by the fixture read-only (root ignores permission bits, not this)."""
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the filesystem of `directory`, then free about `leave` bytes (whole pages)."""
    filler = directory / ".filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(bytes(1 << 16))
        except OSError as err:
            assert err.errno == errno.ENOSPC
    os.truncate(filler, max(filler.stat().st_size - leave, 0))


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit code 2, no traceback, and a last stderr line `seqtool: error: ...` holding every needle
    (train and prepare log progress lines before it)."""
    assert code == 2, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("seqtool: error: "), err
    for needle in needles:
        assert needle in last, last
    return last
