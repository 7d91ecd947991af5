"""`prepare`: train the tokenizers, encode every split into memory-mapped arrays, write a manifest.

Layout of a prepared directory:
    manifest.json                inputs (path, sha256, lines), counts, tokenizer hash, format, and
                                 `files`: every file's size (all present = up to date)
    .seqtool-prepared            marks the directory as seqtool's to replace
    tokenizer/                   the Vocabs (see vocab.py)
    raw/                         generated corpora (synthetic tasks), or the train/valid/test split of a
                                 data.tsv file (seqtool/data/heldout.py)
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
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from seqtool import __version__
from seqtool.data.heldout import held_out_split
from seqtool.data.retrieval import generate_documents
from seqtool.data.synthetic import generate_pairs
from seqtool.data.textio import iter_chunks, iter_lines, iter_numbered_lines, iter_pair_chunks, sha256_file
from seqtool.data.tokenizer import EOS, train_tokenizer
from seqtool.data.vocab import Vocabs, directory_sha256
from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import GenerateSpec, Recipe, SplitSpec, TextDataSpec, TsvSpec
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
        if spec.generate is not None or spec.tsv is not None:  # their splits are written into the stage first
            _write_raw(recipe, stage)
            sources = _resolve_splits(spec, stage)
        vocabs = _vocabs(recipe, sources["train"], tokenizer, stage / "tokenizer")
        counts = {name: _encode_split(recipe, name, split, vocabs, stage) for name, split in sources.items()}
        return _manifest(recipe, fingerprint, vocabs, counts, stage)

    inputs = list(_inputs(spec, splits).values())
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
    """Split name to absolute file paths; generated corpora and a split tsv file live in <prepared>/raw."""
    if spec.tsv is not None:
        _checked_file("data.tsv.path", data_root() / spec.tsv.path)
    if spec.generate is not None or spec.tsv is not None:
        raw = out / "raw"
        if spec.generate is not None and spec.generate.task == "retrieval":
            return {s: SplitSpec(text=str(raw / f"{s}.txt")) for s in SPLITS}
        return {s: SplitSpec(src=str(raw / f"{s}.src"), tgt=str(raw / f"{s}.tgt")) for s in SPLITS}
    root = data_root()
    resolved = {}
    for name in SPLITS:
        split = getattr(spec, name)
        if split is None:
            continue
        paths = {side: str(root / p) for side, p in split.model_dump().items() if p is not None}
        for side, path in paths.items():
            _checked_file(f"data.{name}.{side}", Path(path))
        resolved[name] = SplitSpec(**paths)
    if "valid" not in resolved:
        raise SeqtoolError("data.valid: a validation split is required")
    return resolved


def _checked_file(key: str, path: Path) -> None:
    if not path.is_file():
        # prepare reads a corpus several times (hash, tokenizer, encoding): a FIFO cannot serve
        what = "not a regular file" if path.exists() else "no such file"
        raise SeqtoolError(f"{key}: {path}: {what} (data root: {data_root()}; set SEQTOOL_DATA or fix the path)")


def _inputs(spec: TextDataSpec, splits: dict[str, SplitSpec]) -> dict[str, Path]:
    """The corpus files the data is made from (none for a generated corpus), by name."""
    if spec.generate is not None:
        return {}
    if spec.tsv is not None:
        return {"tsv": data_root() / spec.tsv.path}
    return {f"{name}.{side}": Path(path) for name, split in splits.items()
            for side, path in split.model_dump(exclude_none=True).items()}


def _fingerprint(recipe: Recipe, splits: dict[str, SplitSpec], tokenizer: Path | None) -> dict:
    settings = recipe.data.model_dump(mode="json", exclude={"prepared_dir"})
    inputs = {name: {"path": str(path), "sha256": sha256_file(path)}
              for name, path in _inputs(recipe.data, splits).items()}
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


def _write_raw(recipe: Recipe, stage: Path) -> None:
    (stage / "raw").mkdir(parents=True)
    if recipe.data.generate is not None:
        _generate(recipe.data.generate, stage)
    else:
        _split_tsv(recipe.data.tsv, stage / "raw", recipe.data.encoding_errors)


def _split_tsv(spec: TsvSpec, raw: Path, errors: str) -> None:
    """The held-out split of a tab-separated file of pairs, as raw/<split>.src / .tgt."""
    path, wanted = data_root() / spec.path, max(spec.src_column, spec.tgt_column)
    pairs = []
    for number, line in iter_numbered_lines(path, errors):
        fields = line.split("\t")
        if len(fields) < wanted:
            raise SeqtoolError(f"{path}:{number}: {len(fields)} tab-separated fields, data.tsv needs {wanted}")
        pairs.append((fields[spec.src_column - 1], fields[spec.tgt_column - 1]))
    for name, chosen in held_out_split(pairs, {"test": spec.test, "valid": spec.valid}, spec.seed).items():
        if not chosen:
            raise SeqtoolError(f"data.tsv: {path}: too few distinct pairs for the held-out splits "
                               f"({len(pairs)} lines; valid {spec.valid} and test {spec.test} leave none to train)")
        for side in (0, 1):
            text = "".join(pair[side] + "\n" for pair in chosen)
            (raw / f"{name}.{('src', 'tgt')[side]}").write_text(text, encoding="utf-8")


def _generate(spec: GenerateSpec, stage: Path) -> None:
    raw = stage / "raw"
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


def _vocabs(recipe: Recipe, train: SplitSpec, given: Path | None, place: Path) -> Vocabs:
    """The tokenizers saved at `place`: a copy of the `given` directory's files, else trained on `train`."""
    if given is None:
        _train_vocabs(recipe, train).save(place)
    else:
        shutil.copytree(given, place)
    return Vocabs.load(place)


def _train_vocabs(recipe: Recipe, train: SplitSpec) -> Vocabs:
    spec, errors = recipe.data.tokenizer, recipe.data.encoding_errors
    if train.text is not None:
        tok = train_tokenizer(spec, lambda: iter_lines(Path(train.text), errors))
        return Vocabs(tok, tok, joint=True)
    if spec.joint:
        tok = train_tokenizer(spec, lambda: _interleave(Path(train.src), Path(train.tgt), errors))
        return Vocabs(tok, tok, joint=True)
    src = train_tokenizer(spec, lambda: iter_lines(Path(train.src), errors))
    return Vocabs(src, train_tokenizer(spec, lambda: iter_lines(Path(train.tgt), errors)), joint=False)


def _interleave(src: Path, tgt: Path, errors: str) -> Iterator[str]:
    """Source and target lines alternately, so a line sample for the joint model sees both."""
    for src_chunk, tgt_chunk in iter_pair_chunks(src, tgt, errors):
        for s, t in zip(src_chunk, tgt_chunk):
            yield s
            yield t


class SplitWriter:
    """Appends token sequences to <name>.bin and records offsets for <name>.idx."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype = path, dtype
        self.handle = open(f"{path}.bin", "wb")
        self.offsets = [0]

    def add(self, sequences: list[list[int]], eos: bool = False) -> None:
        flat = [i for seq in sequences for i in (seq + [EOS] if eos else seq)]
        self.handle.write(np.asarray(flat, dtype=self.dtype).tobytes())
        for seq in sequences:
            self.offsets.append(self.offsets[-1] + len(seq) + eos)

    def close(self) -> None:
        self.handle.close()
        np.asarray(self.offsets, dtype=np.int64).tofile(f"{self.path}.idx")


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


def _encode_split(recipe: Recipe, name: str, split: SplitSpec, vocabs: Vocabs, out: Path) -> dict:
    errors = recipe.data.encoding_errors
    if split.text is not None:
        return _encode_text(name, Path(split.text), vocabs, out, errors)
    return _encode_pairs(recipe, name, split, vocabs, out)


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


def _encode_pairs(recipe: Recipe, name: str, split: SplitSpec, vocabs: Vocabs, out: Path) -> dict:
    filtering = name == "train"
    limit = recipe.data.max_len
    writers = {side: SplitWriter(out / f"{name}.{side}", token_dtype(len(tok)))
               for side, tok in (("src", vocabs.src), ("tgt", vocabs.tgt))}
    lines = dropped = words = 0
    refs = None if filtering else _RefWriter(out / "refs", name)
    for src_chunk, tgt_chunk in iter_pair_chunks(Path(split.src), Path(split.tgt), recipe.data.encoding_errors):
        if refs is not None:
            refs.add(src_chunk, tgt_chunk)
        src_ids, tgt_ids = vocabs.src.encode(src_chunk), vocabs.tgt.encode(tgt_chunk)
        if filtering:
            keep = [i for i, (s, t) in enumerate(zip(src_ids, tgt_ids)) if 0 < len(s) <= limit and 0 < len(t) <= limit]
            dropped += len(src_ids) - len(keep)
            src_ids, tgt_ids = [src_ids[i] for i in keep], [tgt_ids[i] for i in keep]
        writers["src"].add(src_ids)
        writers["tgt"].add(tgt_ids)
        lines += len(src_chunk)
        words += sum(len(line.split()) + 1 for line in tgt_chunk)
    for writer in [*writers.values(), *([refs] if refs else [])]:
        writer.close()
    kept = len(writers["src"].offsets) - 1
    if kept == 0:
        raise SeqtoolError(f"{split.src}: the {name} split has no usable sentence pairs "
                           f"({lines} lines, {dropped} empty or longer than data.max_len={limit})")
    return {"lines": lines, "sentences": kept, "dropped": dropped, "words": words,
            "src_tokens": writers["src"].offsets[-1], "tgt_tokens": writers["tgt"].offsets[-1]}


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
