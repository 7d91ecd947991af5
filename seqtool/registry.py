"""A closed registry mapping recipe names to builders and their typed configs."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from seqtool.errors import SeqtoolError


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    config: type | None


class Registry:
    """Names to builders; registering a name twice is a programming error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, config: type | None = None) -> Callable[[Callable], Callable]:
        def decorate(builder: Callable) -> Callable:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, builder, config)
            return builder

        return decorate

    def get(self, name: str) -> Entry:
        if not isinstance(name, str) or name not in self._entries:
            raise SeqtoolError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name) -> str:
        """The message for a name that is not registered, with a 'did you mean'."""
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(self.names())})"

    def names(self) -> list[str]:
        return sorted(self._entries)


MODELS = Registry("model")
TASKS = Registry("task")
STRATEGIES = Registry("decoding strategy")
