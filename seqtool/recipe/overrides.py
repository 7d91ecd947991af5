"""`--set a.b.c=value` overrides: dotted paths into the recipe, values parsed as YAML scalars."""

from __future__ import annotations

from typing import Any

import yaml

from seqtool.errors import SeqtoolError


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into its key path and its value (a YAML scalar, list or mapping)."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not all(path):
        raise SeqtoolError(f"--set {text!r}: expected KEY.PATH=VALUE, e.g. train.max_steps=200")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise SeqtoolError(f"--set {key}: value {raw!r} is not valid YAML ({_first_line(err)})") from None
    return path, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply overrides in order to a plain recipe mapping (in place) and return it."""
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
        node[path[-1]] = value
    return raw


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0]
