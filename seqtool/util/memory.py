"""Handing freed heap memory back to the operating system during a long decode.

Decoding allocates tensors of ever-changing shapes; glibc's malloc keeps freed space in fragmented
arenas, so a `translate` stream's resident memory crept up with its length although nothing is kept
(beam 5, quickstart model: peak 465 MB at 10k lines, 723 MB at 100k). `malloc_trim` between chunks
of input returns free pages (peak 466 MB at 10k, 653 MB at 100k) at no measurable cost. Sending every
allocation of 64 KiB or more straight to mmap (mallopt M_MMAP_THRESHOLD, one arena) flattens it
further (362 MB at 10k, 411 MB at 100k) but made decoding 25-30% slower, so it is not done.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
