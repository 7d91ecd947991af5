"""Running out of memory is a setting too large for the machine: one line naming what to lower."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from seqtool.errors import SeqtoolError

# torch.OutOfMemoryError (CUDA) subclasses RuntimeError; a failed CPU allocation is a plain RuntimeError
# from c10's DefaultCPUAllocator ("not enough memory" or "can't allocate memory", by version).
_ALLOCATOR_WORDS = ("out of memory", "DefaultCPUAllocator")


@contextlib.contextmanager
def out_of_memory_hint(doing: str, lower: str) -> Iterator[None]:
    """Turn an allocation failure while `doing` into `out of memory while <doing>; lower <lower>`."""
    try:
        yield
    except (MemoryError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and not any(word in str(err) for word in _ALLOCATOR_WORDS):
            raise
        raise SeqtoolError(f"out of memory while {doing}; lower {lower}") from None
