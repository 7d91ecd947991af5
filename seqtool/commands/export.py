"""`seqtool export`: a trained translation run as two runtime graphs (encoder, decoder step) with its
tokenizer and decode settings beside them, in a new directory:

    DIR/encoder.onnx|.pt  DIR/step.onnx|.pt  DIR/tokenizer/  DIR/manifest.json  DIR/.seqtool-export

or, for a Transformer, as a CTranslate2 model (seqtool/decoding/ct2_export.py): DIR/model.bin,
config.json and the vocabulary beside the same tokenizer, manifest and marker.

The directory is built in a staging sibling and renamed into place, so it exists whole or not at all;
an existing directory is replaced only when seqtool exported it (its marker), never otherwise.
`load_export` reads one back as a Seq2SeqModel that seqtool's search decodes through.
"""

from __future__ import annotations

import json
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

import seqtool
from seqtool.commands.runs import load_translation_run
from seqtool.data.vocab import Vocabs
from seqtool.decoding.ct2_export import Ct2Translator, save_ct2
from seqtool.decoding.export import FORMATS, ExportedSeq2Seq, Signature, export_graphs, load_graphs
from seqtool.errors import SeqtoolError
from seqtool.recipe.schema import DecodeSpec
from seqtool.util.files import atomic_write_text
from seqtool.util.ownership import EXPORT_MARKER, is_export_dir


def _check_target(directory: Path) -> None:
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise SeqtoolError(f"--output: {directory} exists and is not a directory")
    if directory.is_dir() and any(directory.iterdir()) and not is_export_dir(directory):
        raise SeqtoolError(f"--output: {directory} is not empty and not a seqtool export (no {EXPORT_MARKER}); "
                           "choose another directory")


CT2 = "ctranslate2"
CT2_ARCHS = ("transformer",)  # the models CTranslate2's Transformer spec holds


def export_run(checkpoint: Path, fmt: str, directory: Path) -> dict:
    """Export a run's best (or latest) checkpoint as `fmt`; returns the manifest written."""
    if fmt not in (*FORMATS, CT2):
        raise SeqtoolError(f"--format {fmt}: expected one of {', '.join((*FORMATS, CT2))}")
    _check_target(directory)
    run = load_translation_run(checkpoint, {}, "cpu", "export")
    if fmt == CT2 and run.recipe.model.arch not in CT2_ARCHS:
        raise SeqtoolError(f"--format {CT2}: model.arch {run.recipe.model.arch!r} has no CTranslate2 model "
                           f"(only {', '.join(CT2_ARCHS)}); use --format onnx or torchscript")
    staging = directory.parent / f".{directory.name}.{secrets.token_hex(4)}.tmp"
    try:
        staging.mkdir(parents=True)  # unlike mkdtemp's 0700, the mode the umask allows (the export keeps it)
    except OSError as err:
        raise SeqtoolError(f"--output: {directory}: cannot create it ({err.strerror})") from None
    try:
        if fmt == CT2:
            sig, files = None, {"model": save_ct2(run.model, run.vocabs, staging)}
        else:
            try:
                sig, files = export_graphs(run.model, fmt, staging)
            except Exception as err:  # the exporter's own errors vary by model and torch version
                raise SeqtoolError(f"{run.path}: cannot export model {run.recipe.model.arch!r} as {fmt} "
                                   f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        for name, data in run.payload.get("tokenizer", {}).items():
            (staging / "tokenizer" / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / "tokenizer" / name).write_bytes(data.numpy().tobytes())
        manifest = {"seqtool": seqtool.__version__, "format": fmt, "arch": run.recipe.model.arch,
                    "checkpoint": str(run.path), "files": files, "decode": run.recipe.decode.model_dump(mode="json")}
        if sig is not None:
            manifest.update(enc_tensors=sig.n_enc, state_tensors=sig.n_state)
        atomic_write_text(staging / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        (staging / EXPORT_MARKER).touch()
        _put_in_place(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _put_in_place(staging: Path, directory: Path) -> None:
    """Rename the staging directory to `directory`, moving an earlier export (or an empty directory)
    aside first and removing it only once the new one is in place."""
    _check_target(directory)  # again: another process may have written there meanwhile
    old = None
    if directory.exists():
        old = staging.with_name(staging.name + ".old")
        directory.rename(old)
    staging.rename(directory)
    if old is not None:
        shutil.rmtree(old)


@dataclass
class LoadedExport:
    model: ExportedSeq2Seq
    vocabs: Vocabs
    decode: DecodeSpec
    manifest: dict


def _manifest(directory: Path) -> dict:
    try:
        return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise SeqtoolError(f"{directory}: not a readable seqtool export ({err})") from None


def load_export(directory: Path) -> LoadedExport:
    manifest = _manifest(directory)
    if manifest.get("format") == CT2:
        raise SeqtoolError(f"{directory}: a CTranslate2 export; decode it with load_ct2 or ctranslate2.Translator")
    try:
        sig = Signature(manifest["enc_tensors"], manifest["state_tensors"])
        model = load_graphs(directory, manifest["format"], manifest["files"], sig)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        raise SeqtoolError(f"{directory}: not a readable seqtool export ({err})") from None
    return LoadedExport(model, Vocabs.load(directory / "tokenizer"), DecodeSpec(**manifest["decode"]), manifest)


def translate_exported(directory: Path, lines: list[str], overrides: dict | None = None) -> list[str]:
    """Best translations of `lines` through an export, with its decode settings patched by `overrides`."""
    from seqtool.decoding.translate import translate_lines

    loaded = load_export(directory)
    spec = loaded.decode.model_copy(update=overrides or {})
    return [t.text for t in translate_lines(loaded.model, loaded.vocabs, lines, spec, device=torch.device("cpu"))]


def load_ct2(directory: Path, *, compute_type: str = "default", threads: int = 1) -> Ct2Translator:
    """A CTranslate2 export with its tokenizer, ready to translate lines (compute_type: default, int8, ...)."""
    if _manifest(directory).get("format") != CT2:
        raise SeqtoolError(f"{directory}: not a CTranslate2 export (seqtool export --format {CT2})")
    return Ct2Translator(directory, Vocabs.load(directory / "tokenizer"), compute_type=compute_type, threads=threads)
