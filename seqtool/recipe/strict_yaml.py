"""YAML as recipes and `--set` values read it: safe loading that also refuses a repeated key (which
plain YAML loaders resolve by silently keeping the last) and nesting deep enough to exhaust the stack."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

MAX_DEPTH = 100  # recipes nest 4 levels; PyYAML's composer recurses about 3 frames per level
_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue  # keys a `<<` merge brings in may be overridden, as YAML intends
            key = self.construct_object(key_node)
            if key in first_line:
                raise ConstructorError(None, None, f"duplicate key {key!r} (first at line {first_line[key]})",
                                       key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str) -> Any:
    """The document in `text`; raises yaml.YAMLError (see `problem`)."""
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader: no tag builds a Python object


def problem(err: yaml.YAMLError) -> tuple[int | None, str]:
    """(1-based line or None, what is wrong) of a YAML error, for a one-line message."""
    mark = getattr(err, "problem_mark", None)
    text = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
    return (mark.line + 1 if mark is not None else None), text
