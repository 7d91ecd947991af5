"""Prepared splits as memory-mapped arrays: sentence pairs for translation, one stream for LMs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seqtool.data.prepare import FORMAT
from seqtool.errors import SeqtoolError


@dataclass
class Sequences:
    """Variable-length sequences stored flat: sequence i is tokens[offsets[i]:offsets[i+1]]."""

    tokens: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class ParallelSplit:
    src: Sequences
    tgt: Sequences

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class StreamSplit:
    """A language-model split: every line's tokens followed by EOS, concatenated."""

    tokens: np.ndarray
    words: int
    gaps: np.ndarray | None = None  # generated retrieval text: per token, its query's gap (0: not an answer)


class PreparedData:
    """Read access to a prepared directory (see prepare.py for its layout)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        try:
            self.manifest = json.loads((self.directory / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise SeqtoolError(f"{self.directory}: not a prepared data directory (run seqtool prepare)") from None
        if self.manifest.get("format") != FORMAT:
            raise SeqtoolError(f"{self.directory}: prepared with format {self.manifest.get('format')}, "
                               f"this seqtool reads {FORMAT}; prepare again")

    def has(self, split: str) -> bool:
        return split in self.manifest["splits"]

    def _sequences(self, split: str, side: str) -> Sequences:
        base = f"{self.directory / split}.{side}"
        dtype = np.dtype(self.manifest["dtype"][side])
        offsets = np.fromfile(f"{base}.idx", dtype=np.int64)
        tokens = np.memmap(f"{base}.bin", dtype=dtype, mode="r") if offsets[-1] else np.zeros(0, dtype)
        return Sequences(tokens, offsets)

    def parallel(self, split: str) -> ParallelSplit:
        self._check(split)
        return ParallelSplit(self._sequences(split, "src"), self._sequences(split, "tgt"))

    def stream(self, split: str) -> StreamSplit:
        self._check(split)
        gaps = self.directory / f"{split}.gaps.bin"
        return StreamSplit(self._sequences(split, "text").tokens, self.manifest["splits"][split]["words"],
                           np.memmap(gaps, dtype=np.int32, mode="r") if gaps.is_file() else None)

    def raw_pairs(self, split: str) -> tuple[list[str], list[str]]:
        """Raw source lines and references of a valid/test split."""
        self._check(split)
        return tuple((self.directory / "refs" / f"{split}.{side}").read_text(encoding="utf-8").splitlines()
                     for side in ("src", "tgt"))

    def corpus_splits(self, split: str) -> list[str]:
        """The prepared splits that make up `split`: itself, or one per corpus of a list-form split
        (`valid.de-en`, `valid.fr-en`); none when there is no such split."""
        if self.has(split):
            return [split]
        return [name for name in self.manifest["splits"] if name.startswith(f"{split}.")]

    def tag(self, split: str) -> str | None:
        """The tag of a corpus split's pairs (`valid.de-en`), if its corpus has one."""
        corpora = self.manifest["splits"].get(split, {}).get("corpora") or [{}]
        return corpora[0].get("tag") if len(corpora) == 1 else None

    def _check(self, split: str) -> None:
        if not self.has(split):
            raise SeqtoolError(f"{self.directory}: no {split!r} split (have: {', '.join(self.manifest['splits'])})")
