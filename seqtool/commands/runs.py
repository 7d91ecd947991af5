"""Building models from recipes and loading trained runs (a run directory or one checkpoint file).

A checkpoint carries its resolved recipe and its tokenizer files, so a single .pt file is enough to
translate with; evaluation on a recipe split also needs the prepared data of the run. A checkpoint
belongs to a run only inside one (RUN/checkpoints/X.pt, RUN marked as a run); a copied-out file has no
run directory, so nothing is ever written beside it.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from seqtool.commands.recipes import Recipe, drop_retired, recipe_from_dict
from seqtool.data.vocab import Vocabs
from seqtool.decoding.int8 import int8_model
from seqtool.errors import SeqtoolError
from seqtool.models import MODELS
from seqtool.models.base import VocabSizes
from seqtool.models.quantize import clip_logits, quantize_model
from seqtool.recipe.overrides import merged
from seqtool.training.checkpoint import load_checkpoint
from seqtool.util.ownership import is_run_dir


def build_model(recipe: Recipe, sizes: VocabSizes) -> torch.nn.Module:
    """The recipe's model; fake-quantized when the recipe trains it quantized (so its checkpoints load)."""
    model = MODELS.get(recipe.model.arch).builder(recipe.model, sizes)
    spec = recipe.train.quantize
    if spec is not None:
        quantize_model(model, spec.weights, spec.activations)
        if spec.logits is not None:
            clip_logits(model, spec.logits)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def pack_tokenizer(directory: Path) -> dict[str, torch.Tensor]:
    """Tokenizer files as uint8 tensors, so they travel inside a weights_only checkpoint (none for
    tasks without a tokenizer)."""
    if not directory.is_dir():
        return {}
    return {str(p.relative_to(directory)): torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def tokenizer_sha256(files: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode())
        digest.update(files[name].numpy().tobytes())
    return digest.hexdigest()


def same_tokenizer(directory: Path, payload: dict) -> bool:
    """Whether the prepared data in `directory` was tokenized as the checkpoint `payload` was."""
    return tokenizer_sha256(pack_tokenizer(directory / "tokenizer")) == payload.get("tokenizer_sha256")


def write_tokenizer(files: dict[str, torch.Tensor], directory: Path) -> Path:
    """Write packed tokenizer files into an empty `directory` (pack_tokenizer's inverse); returns it."""
    for name, data in files.items():
        path = directory / name
        if directory.resolve() not in path.resolve().parents:
            raise SeqtoolError(f"tokenizer file name {name!r} escapes its directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.numpy().tobytes())
    return directory


def unpack_vocabs(files: dict[str, torch.Tensor]) -> Vocabs:
    with tempfile.TemporaryDirectory() as tmp:
        directory = write_tokenizer(files, Path(tmp))
        try:
            return Vocabs.load(directory)
        except SeqtoolError:
            raise SeqtoolError("the tokenizer stored in the checkpoint is damaged") from None


@dataclass
class LoadedRun:
    recipe: Recipe
    vocabs: Vocabs | None
    model: torch.nn.Module
    payload: dict
    run_dir: Path | None  # None for a checkpoint outside a run directory
    path: Path


def checkpoint_path(target: Path) -> Path:
    """A run directory means its best checkpoint (or its latest when no best was kept)."""
    if target.is_dir():
        for name in ("best.pt", "latest.pt"):
            if (target / "checkpoints" / name).is_file():
                return target / "checkpoints" / name
        raise SeqtoolError(f"{target}: no checkpoints/best.pt or checkpoints/latest.pt (not a trained run?)")
    return target


def load_run(target: str | Path, overrides: dict | None = None, device: torch.device | str = "cpu") -> LoadedRun:
    """The model of a run dir or checkpoint, in eval mode on `device`; overrides patch the recipe."""
    path = checkpoint_path(Path(target))
    payload = load_checkpoint(path)
    raw = merged(drop_retired(payload["recipe"]), overrides or {})
    recipe = recipe_from_dict(raw, source=f"{path} (recipe)")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" and is_run_dir(path.parent.parent) else None
    if run_dir is not None:
        recipe = recipe.model_copy(update={"output_dir": str(run_dir)})
    try:
        vocabs = unpack_vocabs(payload["tokenizer"]) if payload.get("tokenizer") else None
    except SeqtoolError as err:
        raise SeqtoolError(f"{path}: {err}") from None
    try:
        sizes = VocabSizes(**payload["sizes"])
    except (KeyError, TypeError):
        raise SeqtoolError(f"{path}: checkpoint lacks the model's vocabulary sizes") from None
    model = build_model(recipe, sizes)
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as err:
        raise SeqtoolError(f"{path}: weights do not fit model {recipe.model.arch!r} "
                           f"({str(err).splitlines()[0]})") from None
    model = model.to(device).eval()
    if recipe.decode.precision == "int8":
        model = int8_model(model, device)
    return LoadedRun(recipe, vocabs, model, payload, run_dir, path)


def load_translation_run(target: str | Path, overrides: dict, device: str, command: str) -> LoadedRun:
    """load_run for a command that needs a translation model."""
    run = load_run(target, overrides, pick_device(device))
    if run.recipe.task != "translation":
        raise SeqtoolError(f"{run.path}: a {run.recipe.task!r} run ({run.recipe.model.arch}); {command} needs a "
                           "translation run")
    return run


def pick_device(kind: str) -> torch.device:
    if kind == "cuda" and not torch.cuda.is_available():
        raise SeqtoolError("device cuda: no CUDA device is available (use --device cpu or auto)")
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(kind)
