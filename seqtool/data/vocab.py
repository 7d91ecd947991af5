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
    tag_side: str | None = None  # corpus tags lead the source or the target (data.tag_side); None: no tags

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tags = {"tag_side": self.tag_side} if self.tag_side else {}  # absent: tag-less files stay as they were
        (directory / "vocabs.json").write_text(json.dumps({"joint": self.joint, **tags}), encoding="utf-8")
        self.src.save(directory / "src")
        if not self.joint:
            self.tgt.save(directory / "tgt")

    @classmethod
    def load(cls, directory: Path) -> Vocabs:
        try:
            meta = json.loads((directory / "vocabs.json").read_text(encoding="utf-8"))
            joint = meta["joint"]
        except (OSError, ValueError, KeyError, TypeError):
            raise SeqtoolError(f"{directory}: no seqtool tokenizer here (vocabs.json missing)") from None
        src = load_tokenizer(directory / "src")
        return cls(src, src if joint else load_tokenizer(directory / "tgt"), joint, meta.get("tag_side"))


def directory_sha256(directory: Path) -> str:
    """A hash of every file under a directory (names and bytes), to tie checkpoints to tokenizers."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
