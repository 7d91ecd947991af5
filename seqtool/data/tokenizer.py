"""Tokenizers: whitespace words, GNMT-style wordpieces (tokenizers library) and sentencepiece.

Every tokenizer shares one id layout for its specials: pad=0, bos=1, eos=2, unk=3, so models,
batches and search never ask which tokenizer made the ids.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from seqtool.errors import SeqtoolError
from seqtool.specials import BOS, EOS, PAD, SPECIALS, UNK

_SPACES = re.compile(r"\s+")


def normalize(line: str, lowercase: bool) -> str:
    """Whitespace runs become one space, ends are stripped (as sentencepiece does by default)."""
    line = _SPACES.sub(" ", line).strip()
    return line.lower() if lowercase else line


class Tokenizer(ABC):
    """Text to ids and back. `lossless` promises decode(encode(x)) == normalize(x)."""

    kind: str
    lossless: bool = True

    def __init__(self, lowercase: bool = False):
        self.lowercase = lowercase

    def normalize(self, line: str) -> str:
        return normalize(line, self.lowercase)

    @abstractmethod
    def encode(self, lines: Sequence[str]) -> list[list[int]]: ...

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def piece(self, index: int) -> str: ...

    def tag_id(self, tag: str) -> int:
        """The id of a corpus tag (<2en>): a piece of its own, which only sentencepiece learns."""
        raise SeqtoolError(f"tag {tag}: a {self.kind} tokenizer has no tags (data.tokenizer.kind: sentencepiece)")

    def word_ids(self, ids: Sequence[int]) -> list[int]:
        """For each id, which whitespace word of the decoded text it belongs to: a piece that begins
        with the word-start marker `▁` (sentencepiece, wordpiece) begins a word."""
        words, out = -1, []
        for i in ids:
            if words < 0 or self.piece(int(i)).startswith("▁"):
                words += 1
            out.append(words)
        return out

    @abstractmethod
    def _save_model(self, directory: Path) -> None: ...

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"kind": self.kind, "lowercase": self.lowercase}
        (directory / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        self._save_model(directory)


def _content(ids: Iterable[int]) -> list[int]:
    """Ids up to the first EOS, without pads and BOS."""
    out = []
    for i in ids:
        i = int(i)
        if i == EOS:
            break
        if i > BOS:
            out.append(i)
    return out


class WordTokenizer(Tokenizer):
    """Whitespace words; the literal token `<unk>` (as in PTB and WikiText) maps to the unk id."""

    kind = "word"

    def __init__(self, vocab: Sequence[str], lowercase: bool = False):
        super().__init__(lowercase)
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def train(cls, lines: Iterable[str], *, vocab_size: int | None, min_count: int, lowercase: bool):
        counts: Counter[str] = Counter()
        for line in lines:
            counts.update((line.lower() if lowercase else line).split())
        for special in SPECIALS:
            counts.pop(special, None)
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        if vocab_size is not None:
            if vocab_size - len(SPECIALS) > len(ranked):
                raise SeqtoolError(
                    f"data.tokenizer.vocab_size {vocab_size} is larger than the training data allows "
                    f"({len(ranked) + len(SPECIALS)} with the 4 specials); lower it or set it to null"
                )
            ranked = ranked[: vocab_size - len(SPECIALS)]
        return cls([*SPECIALS, *ranked], lowercase)

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        get = self.index.get
        return [[get(w, UNK) for w in self.normalize(line).split()] for line in lines]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[i] for i in _content(ids))

    def __len__(self) -> int:
        return len(self.vocab)

    def piece(self, index: int) -> str:
        return self.vocab[index]

    def word_ids(self, ids: Sequence[int]) -> list[int]:
        return list(range(len(ids)))

    def _save_model(self, directory: Path) -> None:
        (directory / "vocab.txt").write_text("\n".join(self.vocab) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, lowercase: bool):
        vocab = (directory / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
        return cls(vocab, lowercase)


class WordPieceTokenizer(Tokenizer):
    """Wordpieces as in GNMT (Wu et al. 2016, sec. 4.1): a word-start marker `▁`, no continuation
    marker, so detokenizing is concatenation followed by turning markers back into spaces.

    Punctuation is split off words before the pieces are learnt ("▁dog." -> "▁dog", "."), as the
    paper's wordpiece model sees tokenized words: otherwise every word+punctuation pair takes a
    vocabulary entry of its own. The split pieces carry no marker, so concatenation still restores
    the text exactly."""

    kind = "wordpiece"

    def __init__(self, model, lowercase: bool = False):
        super().__init__(lowercase)
        self.model = model

    @classmethod
    def train(cls, lines: Iterable[str], *, vocab_size: int, lowercase: bool, sample_lines: int):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        model = HFTokenizer(models.WordPiece(unk_token=SPECIALS[UNK], continuing_subword_prefix=""))
        model.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
        model.decoder = decoders.Metaspace()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=list(SPECIALS), continuing_subword_prefix="",
            show_progress=False,
        )
        tok = cls(model, lowercase)
        model.train_from_iterator((tok.normalize(x) for x in _take(lines, sample_lines)), trainer)
        return tok

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        encodings = self.model.encode_batch([self.normalize(x) for x in lines], add_special_tokens=False)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return self.model.decode(_content(ids), skip_special_tokens=False)

    def __len__(self) -> int:
        return self.model.get_vocab_size()

    def piece(self, index: int) -> str:
        return self.model.id_to_token(index)

    def _save_model(self, directory: Path) -> None:
        self.model.save(str(directory / "wordpiece.json"))

    @classmethod
    def load(cls, directory: Path, lowercase: bool):
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_file(str(directory / "wordpiece.json")), lowercase)


class SentencePieceTokenizer(Tokenizer):
    """Sentencepiece unigram or BPE (Kudo and Richardson 2018), trained with seqtool's special ids."""

    kind = "sentencepiece"

    def __init__(self, proto: bytes, lowercase: bool = False):
        import sentencepiece as spm

        super().__init__(lowercase)
        self.proto = proto
        self.model = spm.SentencePieceProcessor(model_proto=proto)

    @classmethod
    def train(cls, lines: Iterable[str], *, vocab_size: int, model_type: str, lowercase: bool,
              character_coverage: float, sample_lines: int, symbols: Sequence[str] = ()):
        import io

        import sentencepiece as spm

        buffer = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=(normalize(x, lowercase) for x in _take(lines, sample_lines)),
                model_writer=buffer, vocab_size=vocab_size, model_type=model_type,
                character_coverage=character_coverage, pad_id=PAD, bos_id=BOS, eos_id=EOS, unk_id=UNK,
                pad_piece=SPECIALS[PAD], bos_piece=SPECIALS[BOS], eos_piece=SPECIALS[EOS],
                unk_piece=SPECIALS[UNK], num_threads=2, minloglevel=2, user_defined_symbols=list(symbols),
            )
        except RuntimeError as err:
            raise SeqtoolError(f"data.tokenizer: sentencepiece training failed: {_spm_reason(err)}") from None
        return cls(buffer.getvalue(), lowercase)

    def encode(self, lines: Sequence[str]) -> list[list[int]]:
        return self.model.encode([self.normalize(x) for x in lines])

    def decode(self, ids: Iterable[int]) -> str:
        return self.model.decode(_content(ids))

    def __len__(self) -> int:
        return self.model.get_piece_size()

    def piece(self, index: int) -> str:
        return self.model.id_to_piece(index)

    def tag_id(self, tag: str) -> int:
        index = self.model.piece_to_id(tag)
        if index == UNK:
            raise SeqtoolError(f"tag {tag}: not a tag of this model (it was trained with other tags or none)")
        return index

    def _save_model(self, directory: Path) -> None:
        (directory / "spm.model").write_bytes(self.proto)

    @classmethod
    def load(cls, directory: Path, lowercase: bool):
        return cls((directory / "spm.model").read_bytes(), lowercase)


def _spm_reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[-1] if str(err).strip() else err.__class__.__name__
    match = re.search(r"Vocabulary size (?:is )?too high \((\d+)\)\. Please set it to a value <= (\d+)", text)
    if match:
        return (f"vocab_size {match.group(1)} is larger than the training data allows "
                f"(at most {match.group(2)}); lower data.tokenizer.vocab_size")
    return text


def _take(lines: Iterable[str], limit: int) -> Iterator[str]:
    for number, line in enumerate(lines):
        if number >= limit:
            return
        yield line


KINDS = {t.kind: t for t in (WordTokenizer, WordPieceTokenizer, SentencePieceTokenizer)}


def load_tokenizer(directory: Path) -> Tokenizer:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        return KINDS[meta["kind"]].load(directory, meta["lowercase"])
    except (OSError, KeyError, ValueError) as err:
        raise SeqtoolError(f"{directory}: not a seqtool tokenizer ({err.__class__.__name__}: {err})") from None


def train_tokenizer(spec, lines_factory, symbols: Sequence[str] = ()) -> Tokenizer:
    """Train the tokenizer a TokenizerSpec describes on the lines that lines_factory() yields; `symbols`
    (corpus tags) become pieces of their own, which only sentencepiece supports."""
    if symbols and spec.kind != "sentencepiece":
        raise SeqtoolError(f"data.train: corpus tags ({', '.join(symbols)}) need data.tokenizer.kind: sentencepiece")
    if spec.kind == "word":
        return WordTokenizer.train(lines_factory(), vocab_size=spec.vocab_size, min_count=spec.min_count,
                                   lowercase=spec.lowercase)
    if spec.vocab_size is None:
        raise SeqtoolError(f"data.tokenizer.vocab_size: {spec.kind} needs a vocabulary size")
    if spec.kind == "wordpiece":
        return WordPieceTokenizer.train(lines_factory(), vocab_size=spec.vocab_size,
                                        lowercase=spec.lowercase, sample_lines=spec.sample_lines)
    return SentencePieceTokenizer.train(
        lines_factory(), vocab_size=spec.vocab_size, model_type=spec.model_type, lowercase=spec.lowercase,
        character_coverage=spec.character_coverage, sample_lines=spec.sample_lines, symbols=symbols,
    )
