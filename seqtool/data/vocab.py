"""The tokenizers of one run: a source and a target side, possibly one shared (joint) model."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from seqtool.data.tokenizer import Tokenizer, load_tokenizer
from seqtool.errors import SeqtoolError


@dataclass
class Vocabs:
    src: Tokenizer
    tgt: Tokenizer
    joint: bool

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocabs.json").write_text(json.dumps({"joint": self.joint}), encoding="utf-8")
        self.src.save(directory / "src")
        if not self.joint:
            self.tgt.save(directory / "tgt")

    @classmethod
    def load(cls, directory: Path) -> Vocabs:
        try:
            joint = json.loads((directory / "vocabs.json").read_text(encoding="utf-8"))["joint"]
        except (OSError, ValueError, KeyError):
            raise SeqtoolError(f"{directory}: no seqtool tokenizer here (vocabs.json missing)") from None
        src = load_tokenizer(directory / "src")
        return cls(src, src if joint else load_tokenizer(directory / "tgt"), joint)


def directory_sha256(directory: Path) -> str:
    """A hash of every file under a directory (names and bytes), to tie checkpoints to tokenizers."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
