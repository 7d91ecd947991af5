"""`--set a.b.c=value` overrides: dotted paths into the recipe, values parsed as YAML."""

from __future__ import annotations

from typing import Any

import yaml

from seqtool.errors import SeqtoolError
from seqtool.recipe.strict_yaml import load_yaml, problem


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and its value (a YAML scalar, list or mapping)."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise SeqtoolError(f"--set {_short(text)}: expected KEY.PATH=VALUE, e.g. train.max_steps=200")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise SeqtoolError(f"--set {key}: value {_short(raw)} is not valid YAML ({problem(err)[1]})") from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply overrides in order to a plain recipe mapping (in place) and return it. A mapping value
    merges into the section it names, so `--set train={max_steps: 9}` keeps the recipe's other train keys."""
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for depth, key in enumerate(path[:-1]):
            child = node.setdefault(key, {})
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                where = ".".join(path[: depth + 1])
                raise SeqtoolError(f"--set {'.'.join(path)}: {where} is a value, not a section")
            node = child
        node[path[-1]] = merged(node.get(path[-1]), value)
    return raw


def merged(old: Any, new: Any) -> Any:
    """`new`, except that mappings merge key by key into `old`'s (neither is changed)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    return {**old, **{key: merged(old.get(key), value) for key, value in new.items()}}


def _short(text: str, limit: int = 60) -> str:
    """repr of a user's value, cut so that a megabyte of it still makes one readable line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
