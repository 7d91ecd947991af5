"""Reading text corpora line by line, with errors that name the file, line and byte."""

from __future__ import annotations

import hashlib
import queue
import re
import threading
from collections.abc import Iterable, Iterator
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO, TypeVar

from seqtool.errors import SeqtoolError, located

T = TypeVar("T")
CHUNK_LINES = 4096
_HINT = " (data.encoding_errors: replace or skip lets it through)"
# Control characters (Unicode category Cc) other than tab: invisible to every tokenizer, they
# would otherwise be learnt as pieces or split words unpredictably, so they become spaces.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Editors on Windows start UTF-8 files with a byte-order mark (U+FEFF), and `cat` of such files puts
# it inside; it is no part of the text, and kept it would join the word after it.
_ZWNBSP = "\ufeff"
MAX_LINE_BYTES = 256 << 20  # text8, a corpus of one 100 MB line, still fits


def _raw_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise located(path, "no such file") from None
    except OSError as err:
        raise located(path, f"cannot read ({err.strerror or err.__class__.__name__})") from None
    with handle:
        yield from numbered_lines(handle, path)


def numbered_lines(handle: BinaryIO, name: Path) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each line of a stream; a line longer than MAX_LINE_BYTES fails naming it,
    where /dev/zero or a binary file would otherwise fill memory."""
    for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), start=1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            raise located(name, f"a line longer than {MAX_LINE_BYTES >> 20} MiB (not a text file?)", number)
        yield number, raw


def decode_line(path: Path, number: int, raw: bytes, errors: str, hint: str = "") -> str | None:
    """UTF-8 text of one line, without byte-order marks; None when errors="skip" drops it.

    errors: "strict" fails naming the line and byte offset, "replace" substitutes U+FFFD.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        if errors == "skip":
            return None
        if errors == "strict":
            raise located(path, f"invalid UTF-8 at byte {err.start} of the line{hint}", number) from None
        text = raw.decode("utf-8", errors="replace")
    return _CONTROL.sub(" ", text.rstrip("\r\n")).replace(_ZWNBSP, "")


def iter_lines(path: Path, errors: str = "strict", hint: str = _HINT) -> Iterator[str]:
    for _, text in iter_numbered_lines(path, errors, hint):
        yield text


def iter_numbered_lines(path: Path, errors: str = "strict", hint: str = _HINT) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, for readers whose errors name the line."""
    for number, raw in _raw_lines(path):
        text = decode_line(path, number, raw, errors, hint)
        if text is not None:
            yield number, text


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter), for streaming in bounded memory."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _End:
    """The read-ahead thread's last message: the input ended, or failed with `error`."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def waiting_chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of the items already read when the consumer asks (at least one, at most `size`): for
    input typed or piped in, where waiting for a full chunk would hold back the answer to a line
    until more lines come. A thread reads ahead (at most `size` items, so memory stays bounded);
    what arrives while a chunk is processed waits for the next. A reading error is raised here, after
    the items before it."""
    ahead: queue.Queue = queue.Queue(maxsize=size)

    def read() -> None:
        try:
            for item in items:
                ahead.put(item)
            ahead.put(_End())
        except BaseException as err:  # raised by the consumer, in its own thread
            ahead.put(_End(err))

    threading.Thread(target=read, daemon=True, name="read-ahead").start()
    while True:
        chunk = [ahead.get()]
        while len(chunk) < size and not ahead.empty():
            chunk.append(ahead.get())
        end = chunk.pop() if isinstance(chunk[-1], _End) else None
        if chunk:
            yield chunk
        if end is not None:
            if end.error is not None:
                raise end.error
            return


def iter_chunks(path: Path, errors: str = "strict") -> Iterator[list[str]]:
    """Lines in lists of CHUNK_LINES, for streaming encoders."""
    return chunked(iter_lines(path, errors), CHUNK_LINES)


def iter_pair_chunks(src: Path, tgt: Path, errors: str = "strict") -> Iterator[tuple[list[str], list[str]]]:
    """Line-aligned chunks of two parallel files; a length mismatch fails naming both files.

    With errors="skip" a line that is bad on either side drops the pair, keeping the sides aligned.
    """
    src_chunk: list[str] = []
    tgt_chunk: list[str] = []
    for s_item, t_item in zip_longest(_raw_lines(src), _raw_lines(tgt)):
        if s_item is None or t_item is None:
            raise SeqtoolError(
                f"{src} has {count_lines(src)} lines but {tgt} has {count_lines(tgt)}: "
                "parallel files must be line-aligned"
            )
        s_text = decode_line(src, *s_item, errors, _HINT)
        t_text = decode_line(tgt, *t_item, errors, _HINT)
        if s_text is None or t_text is None:
            continue
        src_chunk.append(s_text)
        tgt_chunk.append(t_text)
        if len(src_chunk) == CHUNK_LINES:
            yield src_chunk, tgt_chunk
            src_chunk, tgt_chunk = [], []
    if src_chunk:
        yield src_chunk, tgt_chunk


def iter_pairs(src: Path, tgt: Path, errors: str = "strict") -> Iterator[tuple[str, str]]:
    """The line pairs of two parallel files (iter_pair_chunks, one pair at a time)."""
    for sources, targets in iter_pair_chunks(src, tgt, errors):
        yield from zip(sources, targets)


def count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
