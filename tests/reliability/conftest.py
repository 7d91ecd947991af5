"""Fixtures of the reliability tests: a tiny trained run and a small parallel corpus on disk."""

from __future__ import annotations

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
