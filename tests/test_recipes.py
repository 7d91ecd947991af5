"""Every shipped recipe (recipes/**, recursively) validates and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqtool.commands.recipes import load_recipe
from seqtool.commands.runs import build_model
from seqtool.commands.tasks import task_class
from seqtool.models.base import VocabSizes

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"quickstart.yaml", "lstm-attn-multi30k.yaml", "lstm-ptb.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_validates_and_builds(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("#"), "a recipe starts with a comment: what it is, the command, an override"
    recipe = load_recipe(path)
    task = task_class(recipe.task)
    if hasattr(task, "expected_sizes"):
        sizes = task.expected_sizes(recipe)
    else:
        size = recipe.data.tokenizer.vocab_size or 40000  # a word vocabulary's size is known after prepare only
        sizes = VocabSizes(size, size)
    model = build_model(recipe, sizes)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_readme_key_reference_is_current():
    from seqtool.commands.keys import markdown_reference

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    copy = readme.split("<!-- seqtool keys: start -->\n", 1)[1].split("<!-- seqtool keys: end -->", 1)[0]
    assert copy == markdown_reference(), "README's key reference is stale: paste the output of `seqtool keys`"
