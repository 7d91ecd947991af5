"""`prepare`: train the tokenizers, encode every split into memory-mapped arrays, write a manifest.

Layout of a prepared directory:
    manifest.json                inputs (path, sha256, lines), counts, tokenizer hash, format, and
                                 `files`: every file's size (all present = up to date)
    .seqtool-prepared            marks the directory as seqtool's to replace
    tokenizer/                   the Vocabs (see vocab.py)
    raw/                         generated corpora (synthetic tasks), and the train/valid/test splits of
                                 tsv corpora (seqtool/data/corpora.py)
    <split>.gaps.bin             generated retrieval text: per token of the stream (int32), the gap of the
                                 query whose answer it is (0: none; seqtool/data/retrieval.py)
    refs/<split>.src / .tgt      raw text of valid/test pairs, for decoding and BLEU
    <split>.<side>.bin / .idx    token ids (uint16 or int32) and int64 offsets per sentence
Sides are src/tgt for translation and text for language models (one stream: EOS, then each line
followed by EOS, so that every word and line end is predicted once).
The directory is built beside its final place and renamed into it, so it is never half-written;
unchanged inputs and settings make prepare a no-op once every file the manifest lists is there. Only a
directory seqtool made is replaced, and one process builds it at a time (see seqtool/util/ownership.py).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from seqtool import __version__
from seqtool.data.corpora import Part, drop_sentences, held_out_split
from seqtool.data.retrieval import generate_documents
from seqtool.data.synthetic import generate_pairs
from seqtool.data.textio import iter_chunks, iter_lines, iter_pair_chunks, sha256_file
from seqtool.data.tokenizer import EOS, train_tokenizer
from seqtool.data.vocab import Vocabs, directory_sha256
from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import CorpusSpec, GenerateSpec, Recipe, SplitSpec, TextDataSpec
from seqtool.util.files import atomic_write_text
from seqtool.util.ownership import PREPARED_MARKER, check_outside, check_replaceable, claim_run_dir, locked

FORMAT = 1
SPLITS = ("train", "valid", "test")


def data_root() -> Path:
    return Path(os.environ.get("SEQTOOL_DATA", "data"))


def prepared_dir(recipe: Recipe) -> Path:
    return Path(recipe.data.prepared_dir or Path(recipe.run_dir()) / "data")


def prepared_place(recipe: Recipe) -> Path:
    """prepared_dir for writing: the default one lies in the run directory, which is claimed first."""
    if recipe.data.prepared_dir is None:
        claim_run_dir(Path(recipe.run_dir()))
    return prepared_dir(recipe)


def prepare(recipe: Recipe, log=print, verify=None, tokenizer: Path | None = None) -> Path:
    """Make the prepared directory for a recipe's data unless an identical one exists; return it.
    `verify(directory)` may refuse the data before it replaces anything (see build_prepared).
    `tokenizer`, a saved Vocabs directory (a fine-tuned run's parent's), encodes the data instead of one
    trained on it; its hash joins the fingerprint, so another tokenizer means another preparation."""
    out = prepared_dir(recipe)
    spec = recipe.data
    splits = _resolve_splits(spec, out)
    fingerprint = _fingerprint(recipe, splits, tokenizer)
    started = time.perf_counter()

    def build(stage: Path) -> dict:
        sources = splits
        if spec.generate is not None:  # generated corpora are written into the stage first
            _generate(spec.generate, stage)
            sources = _resolve_splits(spec, stage)
        elif _write_held_out(spec, stage):  # as are the splits of tsv corpora
            sources = _resolve_splits(spec, stage)
        vocabs = _vocabs(recipe, sources["train"], tokenizer, stage / "tokenizer")
        counts = {name: _encode_split(recipe, name, split, vocabs, stage) for name, split in sources.items()}
        return _manifest(recipe, fingerprint, vocabs, counts, stage)

    inputs = [] if spec.generate is not None else [  # generated corpora have no files to protect
        Path(p) for split in splits.values() for p in _input_files(split).values()]
    manifest = build_prepared(prepared_place(recipe), fingerprint, build, log, inputs=inputs, verify=verify)
    if manifest is not None:
        lines = sum(c["lines"] for c in manifest["splits"].values())
        seconds = time.perf_counter() - started
        log(f"prepare: {lines} lines in {seconds:.1f}s ({lines / max(seconds, 1e-9):.0f} lines/s) -> {out}")
    return out


def build_prepared(out: Path, fingerprint: dict, build, log, *, inputs: list[Path] = (), verify=None) -> dict | None:
    """Build a prepared directory unless `out` already holds one made from the same `fingerprint`.

    `build(stage)` writes the files into a staging directory and returns the manifest; the manifest
    (listing every file and its size) is written last and the stage renamed into place, so an
    interrupted build leaves no `out` that looks current. `verify(directory)`, when given, sees the
    data about to be returned (the current `out`, or the stage before it replaces anything) and may
    raise to refuse it. Returns the new manifest, or None when `out` was up to date.
    """
    out = Path(os.path.realpath(out)) if out.is_symlink() else out
    check_outside(out, list(inputs), "data.prepared_dir")
    if _up_to_date(out, fingerprint, log, verify):
        return None
    stage, old = (out.with_name(f"{out.name}.{suffix}") for suffix in ("partial", "old"))
    for place in (out, stage, old):
        check_replaceable(place, "data.prepared_dir")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SeqtoolError(f"data.prepared_dir: {out}: cannot create ({err.strerror})") from None
    with locked(out.with_name(f".{out.name}.lock"), lambda: log(f"prepare: waiting for another seqtool "
                                                                   f"preparing {out}")):
        if _up_to_date(out, fingerprint, log, verify):  # the other process may have made it meanwhile
            return None
        return _build_in_stage(stage, build, verify, lambda: _swap_into_place(stage, out, old))


def _build_in_stage(stage: Path, build, verify, swap) -> dict:
    """Build into a fresh stage marked as seqtool's, list its files in the manifest, write that last,
    and `swap` the stage into place; a failure at any point removes the stage."""
    try:
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        (stage / PREPARED_MARKER).touch()
        manifest = build(stage)
        manifest["files"] = {str(p.relative_to(stage)): p.stat().st_size
                             for p in sorted(stage.rglob("*")) if p.is_file()}
        if verify is not None:
            verify(stage)
        atomic_write_text(stage / "manifest.json", json.dumps(manifest, indent=1))
        swap()
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        if isinstance(err, OSError):  # a full disk, a read-only place
            where = f": {err.filename}" if err.filename else ""
            raise SeqtoolError(f"{stage}: cannot write the prepared data ({err.strerror}{where})") from None
        raise
    return manifest


def _up_to_date(out: Path, fingerprint: dict, log, verify) -> bool:
    if not _is_current(out, fingerprint):
        return False
    if verify is not None:
        verify(out)
    log(f"prepare: {out} is up to date")
    return True


def _resolve_splits(spec: TextDataSpec, out: Path) -> dict[str, SplitSpec]:
    """Split name to absolute file paths; generated corpora live in <prepared>/raw."""
    if spec.generate is not None:
        raw = out / "raw"
        if spec.generate.task == "retrieval":
            return {s: SplitSpec(text=str(raw / f"{s}.txt")) for s in SPLITS}
        return {s: SplitSpec(src=str(raw / f"{s}.src"), tgt=str(raw / f"{s}.tgt")) for s in SPLITS}
    resolved = {}
    for name in SPLITS:
        split = getattr(spec, name)
        if isinstance(split, SplitSpec):
            resolved[name] = SplitSpec(**{side: _data_file(f"data.{name}.{side}", p)
                                          for side, p in split.model_dump().items() if p is not None})
        elif split is not None or name != "train":
            resolved.update(_resolve_corpora(spec, name, out))
    if "valid" not in resolved and not any(name.startswith("valid.") for name in resolved):
        raise SeqtoolError("data.valid: a validation split is required")
    return resolved


def _data_file(key: str, relative: str) -> str:
    path = data_root() / relative
    if not path.is_file():
        # prepare reads a corpus several times (hash, tokenizer, encoding): a FIFO cannot serve
        what = "not a regular file" if path.exists() else "no such file"
        raise SeqtoolError(f"{key}: {path}: {what} (data root: {data_root()}; set SEQTOOL_DATA or fix the path)")
    return str(path)


def _resolve_corpora(spec: TextDataSpec, split: str, out: Path) -> dict[str, list[Part]]:
    """A list-form split: `train` as one list of corpora; valid and test as one split per corpus
    (`valid.<name>`), by default the held-out pairs of the tsv training corpora."""
    raw = out / "raw"
    if split == "train":
        return {"train": [_part(c, f"data.train.{i}", raw, "train") for i, c in enumerate(spec.corpora("train"))]}
    entries = spec.corpora(split)
    if entries is None:  # not given: the held-out pairs of the tsv training corpora, if any
        return {f"{split}.{c.name}": [_part(c, f"data.train.{i}", raw, split)]
                for i, c in enumerate(spec.corpora("train") or []) if c.tsv is not None}
    return {f"{split}.{c.name}": [_part(c, f"data.{split}.{i}", raw, split)] for i, c in enumerate(entries)}


def _part(corpus: CorpusSpec, key: str, raw: Path, split: str) -> Part:
    if corpus.tsv is not None:
        stem = raw / f"{corpus.name}.{split}"
        return Part(f"{stem}.src", f"{stem}.tgt", corpus.name, corpus.weight, corpus.tag, key,
                    (_data_file(f"{key}.tsv", corpus.tsv),))
    return Part(_data_file(f"{key}.src", corpus.src), _data_file(f"{key}.tgt", corpus.tgt), corpus.name,
                corpus.weight, corpus.tag, key)


def _input_files(split: SplitSpec | list[Part]) -> dict[str, str]:
    """The files a resolved split is read from, by side (and corpus name)."""
    if isinstance(split, SplitSpec):
        return split.model_dump(exclude_none=True)
    files = {}
    for part in split:
        sides = {"tsv": part.origin[0]} if part.origin else {"src": part.src, "tgt": part.tgt}
        files.update({f"{part.name}.{side}": path for side, path in sides.items()})
    return files


def _write_held_out(spec: TextDataSpec, stage: Path) -> bool:
    """Write the train, valid and test pairs of the tsv training corpora into <stage>/raw; whether any.
    No sentence held out of one corpus is trained on in another (de-en and fr-en share English)."""
    tsv = [c for c in spec.corpora("train") or [] if c.tsv is not None]
    splits = {c.name: held_out_split(data_root() / c.tsv, c.columns, spec.held_out, spec.split_seed,
                                     spec.encoding_errors) for c in tsv}
    held = [pair for parts in splits.values() for name in ("valid", "test") for pair in parts[name]]
    for name, parts in splits.items():
        for split, pairs in parts.items():
            pairs = drop_sentences(pairs, held) if split == "train" else pairs
            stem = stage / "raw" / f"{name}.{split}"
            stem.parent.mkdir(exist_ok=True)
            for side in (0, 1):
                Path(f"{stem}.{('src', 'tgt')[side]}").write_text("".join(p[side] + "\n" for p in pairs),
                                                                  encoding="utf-8")
    return bool(tsv)


def _fingerprint(recipe: Recipe, splits: dict[str, SplitSpec | list[Part]], tokenizer: Path | None) -> dict:
    settings = recipe.data.model_dump(mode="json", exclude={"prepared_dir"})
    inputs = {}
    if recipe.data.generate is None:
        for name, split in splits.items():
            for side, path in _input_files(split).items():
                inputs[f"{name}.{side}"] = {"path": path, "sha256": sha256_file(Path(path))}
    fingerprint = {"format": FORMAT, "task": recipe.task, "settings": settings, "inputs": inputs}
    if tokenizer is not None:
        fingerprint["tokenizer_sha256"] = directory_sha256(tokenizer)
    return fingerprint


def _is_current(out: Path, fingerprint: dict) -> bool:
    """Made from `fingerprint`, with every file the manifest lists present at its size."""
    try:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"] if manifest.get("fingerprint") == fingerprint else None
        return files is not None and all((out / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _generate(spec: GenerateSpec, stage: Path) -> None:
    raw = stage / "raw"
    raw.mkdir(parents=True)
    for split in SPLITS:  # streamed: a large data.generate count never sits in memory
        if spec.task == "retrieval":
            _generate_text(spec, split, raw / f"{split}.txt", stage / f"{split}.gaps.bin")
            continue
        with open(raw / f"{split}.src", "w", encoding="utf-8") as src, \
                open(raw / f"{split}.tgt", "w", encoding="utf-8") as tgt:
            for source, target in generate_pairs(spec, split):
                src.write(source + "\n")
                tgt.write(target + "\n")


def _generate_text(spec: GenerateSpec, split: str, text: Path, gaps: Path) -> None:
    """Retrieval documents, one a line, and their gaps laid out as the stream _encode_text makes of them
    (the word tokenizer gives one token a word)."""
    with open(text, "w", encoding="utf-8") as words, open(gaps, "wb") as marks:
        marks.write(np.zeros(1, np.int32).tobytes())  # the stream's opening EOS
        for line, gaps_of_words in generate_documents(spec, split):
            words.write(" ".join(line) + "\n")
            marks.write(np.asarray([*gaps_of_words, 0], np.int32).tobytes())  # 0: the line's EOS


def _vocabs(recipe: Recipe, train: SplitSpec | list[Part], given: Path | None, place: Path) -> Vocabs:
    """The tokenizers saved at `place`: a copy of the `given` directory's files, else trained on `train`."""
    if given is None:
        _train_vocabs(recipe, train).save(place)
    else:
        shutil.copytree(given, place)
    return Vocabs.load(place)


def _train_vocabs(recipe: Recipe, train: SplitSpec | list[Part]) -> Vocabs:
    """The tokenizers, trained on the training split; several corpora are read in turn, a line of each,
    and their tags become pieces of their own (sentencepiece user-defined symbols)."""
    spec, errors = recipe.data.tokenizer, recipe.data.encoding_errors
    if isinstance(train, SplitSpec) and train.text is not None:
        tok = train_tokenizer(spec, lambda: iter_lines(Path(train.text), errors))
        return Vocabs(tok, tok, joint=True)
    parts = _parts(train)
    tags = sorted({p.tag for p in parts if p.tag is not None})
    tag_side = recipe.data.tag_side if tags else None
    if spec.joint:
        tok = train_tokenizer(spec, lambda: _round_robin(_interleave(p, errors) for p in parts), tags)
        return Vocabs(tok, tok, joint=True, tag_side=tag_side)
    tagged = 0 if recipe.data.tag_side == "source" else 1
    src, tgt = (train_tokenizer(spec, lambda side=side: _round_robin(_side(p, side, errors) for p in parts),
                                tags if side == tagged else ()) for side in (0, 1))
    return Vocabs(src, tgt, joint=False, tag_side=tag_side)


def _side(part: Part, side: int, errors: str) -> Iterator[str]:
    for chunks in _pair_chunks(part, errors):
        yield from chunks[side]


def _parts(split: SplitSpec | list[Part]) -> list[Part]:
    """A pair split as a list of corpora: a plain one is one corpus without name, weight or tag."""
    return split if isinstance(split, list) else [Part(split.src, split.tgt)]


def _pair_chunks(part: Part, errors: str) -> Iterator[tuple[list[str], list[str]]]:
    """iter_pair_chunks of a corpus; its errors name the recipe key of a list entry too."""
    try:
        yield from iter_pair_chunks(Path(part.src), Path(part.tgt), errors)
    except SeqtoolError as err:
        if not part.key:
            raise
        raise SeqtoolError(f"{part.key}: {err}") from None


def _round_robin(iterators) -> Iterator[str]:
    """One item of each iterator in turn until all are spent, so a line sample sees every corpus."""
    live = list(iterators)
    while live:
        for it in list(live):
            item = next(it, None)
            if item is None:
                live.remove(it)
            else:
                yield item


def _interleave(part: Part, errors: str) -> Iterator[str]:
    """Source and target lines alternately, so a line sample for the joint model sees both."""
    for src_chunk, tgt_chunk in _pair_chunks(part, errors):
        for s, t in zip(src_chunk, tgt_chunk):
            yield s
            yield t


class SplitWriter:
    """Appends token sequences to <name>.bin and records offsets for <name>.idx."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, dtype
        self.handle = open(f"{path}.bin", "wb")
        self.offsets = array("q", [0])  # 8 bytes a sentence: a list of ints would hold ~36 (bench/prepare.py)

    def add(self, sequences: list[list[int]], eos: bool = False) -> None:
        flat = [i for seq in sequences for i in (seq + [EOS] if eos else seq)]
        self.handle.write(np.asarray(flat, dtype=self.dtype).tobytes())
        for seq in sequences:
            self.offsets.append(self.offsets[-1] + len(seq) + eos)

    def close(self) -> None:
        self.handle.close()
        np.frombuffer(self.offsets, dtype=np.int64).tofile(f"{self.path}.idx")


class _RefWriter:
    """Raw source and reference lines of valid/test, so evaluation decodes text exactly as translate does."""

    def __init__(self, directory: Path, name: str):
        directory.mkdir(exist_ok=True)
        self.handles = [open(directory / f"{name}.{side}", "w", encoding="utf-8") for side in ("src", "tgt")]

    def add(self, src: list[str], tgt: list[str]) -> None:
        for handle, lines in zip(self.handles, (src, tgt)):
            handle.write("".join(line + "\n" for line in lines))

    def close(self) -> None:
        for handle in self.handles:
            handle.close()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max else np.int32)


def _encode_split(recipe: Recipe, name: str, split: SplitSpec | list[Part], vocabs: Vocabs, out: Path) -> dict:
    errors = recipe.data.encoding_errors
    if isinstance(split, SplitSpec) and split.text is not None:
        return _encode_text(name, Path(split.text), vocabs, out, errors)
    return _encode_pairs(recipe, name, _parts(split), vocabs, out)


def _encode_text(name: str, path: Path, vocabs: Vocabs, out: Path, errors: str) -> dict:
    writer = SplitWriter(out / f"{name}.text", token_dtype(len(vocabs.src)))
    writer.add([[]], eos=True)  # the stream opens with EOS, so the first word is predicted too
    lines = words = 0
    for chunk in iter_chunks(path, errors):
        writer.add(vocabs.src.encode(chunk), eos=True)
        lines += len(chunk)
        words += sum(len(line.split()) for line in chunk)
    writer.close()
    if words == 0:
        raise SeqtoolError(f"{path}: empty file: the {name} split has no words")
    return {"lines": lines, "tokens": writer.offsets[-1], "words": words + lines}


def _encode_pairs(recipe: Recipe, name: str, parts: list[Part], vocabs: Vocabs, out: Path) -> dict:
    """Encode the corpora of a pair split one after another into one split; a corpus's tag id leads its
    source or target (data.tag_side). Several corpora are listed with their sentence counts."""
    filtering = name == "train"
    limit = recipe.data.max_len
    writers = {side: SplitWriter(out / f"{name}.{side}", token_dtype(len(tok)))
               for side, tok in (("src", vocabs.src), ("tgt", vocabs.tgt))}
    lines = dropped = words = 0
    refs = None if filtering else _RefWriter(out / "refs", name)
    corpora = []
    for part in parts:
        tagged = "src" if recipe.data.tag_side == "source" else "tgt"
        tag = [] if part.tag is None else [getattr(vocabs, tagged).tag_id(part.tag)]
        before = len(writers["src"].offsets)
        for src_chunk, tgt_chunk in _pair_chunks(part, recipe.data.encoding_errors):
            if refs is not None:
                refs.add(src_chunk, tgt_chunk)
            ids = {"src": vocabs.src.encode(src_chunk), "tgt": vocabs.tgt.encode(tgt_chunk)}
            if filtering:
                keep = [i for i, (s, t) in enumerate(zip(*ids.values())) if 0 < len(s) <= limit and 0 < len(t) <= limit]
                dropped += len(src_chunk) - len(keep)
                ids = {side: [seqs[i] for i in keep] for side, seqs in ids.items()}
            ids[tagged] = [tag + seq for seq in ids[tagged]]
            for side, writer in writers.items():
                writer.add(ids[side])
            lines += len(src_chunk)
            words += sum(len(line.split()) + 1 for line in tgt_chunk)
        corpora.append({"name": part.name, "sentences": len(writers["src"].offsets) - before,
                        "weight": part.weight, "tag": part.tag})
    for writer in [*writers.values(), *([refs] if refs else [])]:
        writer.close()
    kept = len(writers["src"].offsets) - 1
    if kept == 0:
        raise SeqtoolError(f"{parts[0].src}: the {name} split has no usable sentence pairs "
                           f"({lines} lines, {dropped} empty or longer than data.max_len={limit})")
    listed = {"corpora": corpora} if parts[0].name is not None else {}
    return {"lines": lines, "sentences": kept, "dropped": dropped, "words": words,
            "src_tokens": writers["src"].offsets[-1], "tgt_tokens": writers["tgt"].offsets[-1], **listed}


def manifest_header(recipe: Recipe, fingerprint: dict) -> dict:
    """The keys every prepared directory's manifest.json starts with, whichever task wrote it."""
    return {"format": FORMAT, "seqtool": __version__, "fingerprint": fingerprint, "task": recipe.task}


def _manifest(recipe: Recipe, fingerprint: dict, vocabs: Vocabs, counts: dict, stage: Path) -> dict:
    return {
        **manifest_header(recipe, fingerprint),
        "tokenizer_sha256": directory_sha256(stage / "tokenizer"),
        "vocab": {"src": len(vocabs.src), "tgt": len(vocabs.tgt), "joint": vocabs.joint},
        "dtype": {"src": token_dtype(len(vocabs.src)).name, "tgt": token_dtype(len(vocabs.tgt)).name,
                  "text": token_dtype(len(vocabs.src)).name},
        "splits": counts,
    }


def _swap_into_place(stage: Path, out: Path, old: Path) -> None:
    """Rename `stage` to `out`; the previous `out` (checked to be seqtool's) goes by way of `old`."""
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    stage.rename(out)
    shutil.rmtree(old, ignore_errors=True)
