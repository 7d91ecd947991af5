"""The package's layering (pyproject.toml [tool.importlinter]) holds, and a deliberate violation breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")
REPO = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` over the seqtool package under `root`, with the repository's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    command = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
               "--config", str(REPO / "pyproject.toml"), "--no-cache"]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_the_layers_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_model_importing_a_command_breaks_the_layers(tmp_path):
    shutil.copytree(REPO / "seqtool", tmp_path / "seqtool", ignore=shutil.ignore_patterns("__pycache__"))
    base = tmp_path / "seqtool" / "models" / "base.py"
    base.write_text(base.read_text(encoding="utf-8") + "\nfrom seqtool.commands.runs import load_run  # noqa\n",
                    encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "seqtool.models.base -> seqtool.commands.runs" in result.stdout
    assert "layers, top to bottom BROKEN" in result.stdout


def test_readme_layout_names_every_package_and_module():
    """Every sub-package, model family and top-level module is in README's layout, and nothing else."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    layout = readme.split("<!-- layout: start -->", 1)[1].split("<!-- layout: end -->", 1)[0]
    listed = {line.split()[0] for line in layout.splitlines() if line.startswith(("  ", "    ")) and
              line.split()[0].endswith(("/", ".py"))}
    package = REPO / "seqtool"

    def entries(folder: Path) -> set[str]:
        return {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").exists()} | {
            p.name for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__")}

    expected = entries(package) | {p for p in entries(package / "models") if p.endswith("/")}
    assert listed == expected
