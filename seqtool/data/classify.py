"""Data of task classify: one label per sequence, generated from a seed (xor, listops) or read from
labelled text files; `prepare` and the batches.

Sources (a recipe names exactly one under `data`):
    xor      the parity of marked positions (seqtool/data/xor.py; CDIL-CNN's XOR task), 2 classes
    listops  nested list operators over digits (seqtool/data/listops.py; LRA's ListOps), 10 classes
    text     files of `label<TAB>text` lines, one example per line (the first tab ends the label; the
             text is tokenized by data.tokenizer, trained on the training file); the classes are the
             training file's labels, in numeric order when all are integers, else sorted as strings
Generated examples are all distinct: valid and test are drawn first, each from its own stream of the
seed, then train, skipping any sequence drawn before (LRA's generator keeps such a set too), so no
held-out sequence is trained on and the held-out splits stay the same whatever the training size.

Prepared directory (staged and renamed into place as in seqtool/data/prepare.py):
    manifest.json            settings, text inputs (path, sha256), `classes` (label names), per split the
                             sequences, tokens, longest sequence and the texts cut to data.text.max_len
    tokenizer/               the generator's symbols as a word vocabulary, or the trained tokenizer
    <split>.tokens.npy       the token ids of every sequence, concatenated
    <split>.offsets.npy      int64: sequence i is tokens[offsets[i]:offsets[i+1]]
    <split>.labels.npy       int64 class ids
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from seqtool.data import listops, xor
from seqtool.data.prepare import FORMAT, build_prepared, data_root, manifest_header, prepared_place, token_dtype
from seqtool.data.textio import CHUNK_LINES, chunked, iter_numbered_lines, sha256_file
from seqtool.data.tokenizer import SPECIALS, WordTokenizer, train_tokenizer
from seqtool.data.vocab import Vocabs, directory_sha256
from seqtool.errors import SeqtoolError, located
from seqtool.specials import PAD

SPLITS = ("train", "valid", "test")
DRAW_ORDER = ("valid", "test", "train")
OFFSET = len(SPECIALS)  # a generator's symbol id s is token id OFFSET + s


@dataclass
class Examples:
    tokens: list[np.ndarray]
    labels: list[int]


# -- generated sources ---------------------------------------------------------------------------------
def generated(source: str, spec) -> tuple[list[str], list[str], dict[str, Examples]]:
    """The symbol names, class names and splits of a generated source (`spec`: its data section)."""
    if source == "xor":
        names, classes = xor.symbols(spec.levels), ["0", "1"]

        def draw(rng):
            return xor.draw_sequence(rng, length=spec.length, marks=spec.marks, levels=spec.levels)
    else:
        names, classes = list(listops.SYMBOLS), list(listops.DIGITS)

        def draw(rng):
            return listops.draw_expression(rng, min_length=spec.min_length, max_length=spec.max_length,
                                           max_depth=spec.max_depth, max_args=spec.max_args)
    seen: set[bytes] = set()
    splits = {}
    for name in DRAW_ORDER:
        stream = np.random.SeedSequence([spec.seed, SPLITS.index(name)])
        rng = np.random.default_rng(stream) if source == "xor" else random.Random(int(stream.generate_state(1)[0]))
        splits[name] = _distinct(draw, rng, getattr(spec, name), seen, f"data.{source}.{name}")
    return names, classes, {name: splits[name] for name in SPLITS}


def _distinct(draw: Callable, rng, count: int, seen: set[bytes], key: str) -> Examples:
    """`count` sequences none of which is in `seen` (which they join); fails when repeats dominate, as
    for short sequences whose every variant has been drawn."""
    examples, repeats = Examples([], []), 0
    dtype = np.uint16  # every generator has far fewer than 2^16 symbols
    while len(examples.labels) < count:
        symbols, label = draw(rng)
        ids = (np.asarray(symbols) + OFFSET).astype(dtype)
        digest = hashlib.blake2b(ids.tobytes(), digest_size=16).digest()
        if digest in seen:
            repeats += 1
            if repeats > count + 1000:
                raise SeqtoolError(f"{key}: {count} distinct sequences are more than these settings make "
                                   f"({len(examples.labels)} found, {repeats} repeats); lower the counts or "
                                   "lengthen the sequences")
            continue
        seen.add(digest)
        examples.tokens.append(ids)
        examples.labels.append(label)
    return examples


# -- labelled text -------------------------------------------------------------------------------------
def text_paths(spec) -> dict[str, Path]:
    """The split files of a text source (under the data root), each checked to be a regular file."""
    paths = {}
    for name in SPLITS:
        if getattr(spec, name) is None:
            continue
        path = data_root() / getattr(spec, name)
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such file"
            raise SeqtoolError(f"data.text.{name}: {path}: {what} (data root: {data_root()})")
        paths[name] = path
    return paths


def labelled_lines(path: Path, errors: str) -> Iterator[tuple[int, str, str]]:
    """(line number, label, text) of each `label<TAB>text` line; a malformed line fails naming it."""
    for number, line in iter_numbered_lines(path, errors):
        label, tab, text = line.partition("\t")
        if not tab:
            raise located(path, "expected label<TAB>text (no tab on the line)", number)
        if not label.strip():
            raise located(path, "empty label before the tab", number)
        if not text.strip():
            raise located(path, "no text after the label", number)
        yield number, label.strip(), text


def read_text(spec, tokenizer_spec) -> tuple[Vocabs, list[str], dict[str, Examples], dict[str, int]]:
    """The tokenizer, classes and splits of a text source, and per split how many texts were cut."""
    paths = text_paths(spec)
    found = {label for _, label, _ in labelled_lines(paths["train"], spec.encoding_errors)}
    classes = sorted(found, key=int) if all(_is_integer(c) for c in found) else sorted(found)
    if len(classes) < 2:
        raise SeqtoolError(f"data.text.train: {paths['train']}: one label only ({classes[0]!r}); "
                           "classification needs two or more")
    tok = train_tokenizer(tokenizer_spec, lambda: (t for _, _, t in labelled_lines(paths["train"],
                                                                                   spec.encoding_errors)))
    index = {c: i for i, c in enumerate(classes)}
    splits, cut = {}, {}
    for name, path in paths.items():
        splits[name], cut[name] = _encode(path, tok, index, spec)
    return Vocabs(tok, tok, joint=True), classes, splits, cut


def _encode(path: Path, tok, index: dict[str, int], spec) -> tuple[Examples, int]:
    """The examples of one file, and how many texts were longer than data.text.max_len (cut to it)."""
    examples, cut = Examples([], []), 0
    dtype = token_dtype(len(tok))
    for chunk in chunked(labelled_lines(path, spec.encoding_errors), CHUNK_LINES):
        for (number, label, _), ids in zip(chunk, tok.encode([text for _, _, text in chunk])):
            if label not in index:
                raise located(path, f"label {label!r} does not occur in the training file", number)
            if not ids:
                raise located(path, "the text has no tokens", number)
            cut += len(ids) > spec.max_len
            examples.tokens.append(np.asarray(ids[: spec.max_len], dtype))
            examples.labels.append(index[label])
    if not examples.labels:
        raise located(path, "no examples (empty file)")
    return examples, cut


def _is_integer(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


# -- prepare -------------------------------------------------------------------------------------------
def prepare_classify(recipe, log=print, verify=None) -> Path:
    """Generate or read every split into the prepared directory, unless it is current."""
    out, data = prepared_place(recipe), recipe.data
    source, spec = data.source()
    paths = text_paths(spec) if source == "text" else {}
    fingerprint = {"format": FORMAT, "task": recipe.task,
                   "settings": data.model_dump(mode="json", exclude={"prepared_dir"}),
                   "inputs": {name: {"path": str(p), "sha256": sha256_file(p)} for name, p in paths.items()}}

    def build(stage: Path) -> dict:
        if source == "text":
            vocabs, classes, splits, cut = read_text(spec, data.tokenizer)
        else:
            names, classes, splits = generated(source, spec)
            tok = WordTokenizer([*SPECIALS, *names])
            vocabs, cut = Vocabs(tok, tok, joint=True), dict.fromkeys(splits, 0)
        vocabs.save(stage / "tokenizer")
        dtype = token_dtype(len(vocabs.src))
        counts = {name: {**_write_split(stage, name, examples, dtype), "cut": cut[name]}
                  for name, examples in splits.items()}
        return {**manifest_header(recipe, fingerprint), "source": source, "classes": classes,
                "vocab": len(vocabs.src), "tokenizer_sha256": directory_sha256(stage / "tokenizer"),
                "splits": counts}

    manifest = build_prepared(out, fingerprint, build, log, inputs=list(paths.values()), verify=verify)
    if manifest is not None:
        shown = ", ".join(f"{k} {v['sequences']}" for k, v in manifest["splits"].items())
        log(f"prepare: {source}, {len(manifest['classes'])} classes, {shown} sequences -> {out}")
    return out


def _write_split(stage: Path, name: str, examples: Examples, dtype: np.dtype) -> dict:
    lengths = np.fromiter(map(len, examples.tokens), np.int64, len(examples.tokens))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    np.save(stage / f"{name}.tokens.npy", np.concatenate(examples.tokens).astype(dtype))
    np.save(stage / f"{name}.offsets.npy", offsets)
    np.save(stage / f"{name}.labels.npy", np.asarray(examples.labels, np.int64))
    return {"sequences": len(lengths), "tokens": int(offsets[-1]), "longest": int(lengths.max())}


# -- batches -------------------------------------------------------------------------------------------
@dataclass
class ClassifyBatch:
    """What a SequenceClassifier reads (seqtool/models/base.py)."""

    tokens: torch.Tensor  # (B, T) int64 ids, PAD after each sequence's end
    mask: torch.Tensor  # (B, T) bool, True on real positions
    labels: torch.Tensor  # (B,) int64 class ids
    ntokens: int  # examples: the trainer divides the summed loss by it

    def to(self, device) -> ClassifyBatch:
        return type(self)(**{f.name: getattr(self, f.name).to(device) if f.name != "ntokens" else self.ntokens
                             for f in fields(self)})


class ClassifySplit:
    """One prepared split, memory-mapped."""

    def __init__(self, directory: Path, name: str):
        self.tokens, self.offsets, self.labels = (np.load(directory / f"{name}.{a}.npy", mmap_mode="r")
                                                  for a in ("tokens", "offsets", "labels"))
        self.lengths = np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.labels)

    def collate(self, index: np.ndarray) -> ClassifyBatch:
        starts, lengths = self.offsets[index], self.lengths[index]
        tokens = np.full((len(index), int(lengths.max())), PAD, np.int64)
        for row, (start, length) in enumerate(zip(starts, lengths)):
            tokens[row, :length] = self.tokens[start : start + length]
        mask = np.arange(tokens.shape[1]) < lengths[:, None]
        return ClassifyBatch(torch.from_numpy(tokens), torch.from_numpy(mask),
                             torch.from_numpy(np.asarray(self.labels[index], np.int64)), len(index))
