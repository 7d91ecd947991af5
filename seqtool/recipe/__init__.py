"""Loading, validating and writing recipes."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seqtool.data.textio import BOM
from seqtool.errors import SeqtoolError, located
from seqtool.recipe.overrides import apply_overrides
from seqtool.recipe.schema import Recipe
from seqtool.recipe.strict_yaml import load_yaml, problem
from seqtool.util.files import atomic_write_text

__all__ = ["Recipe", "load_recipe", "recipe_from_dict", "dump_recipe", "read_yaml", "drop_retired"]
# Keys that earlier versions wrote into every run's recipe and checkpoint: a stored recipe loses them
# (drop_retired), a recipe a user gives that still sets one fails as an unknown key.
RETIRED = (("data", "workers"),)


MAX_RECIPE_BYTES = 1 << 20


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safely load a YAML mapping, with errors that name the file and line."""
    path = Path(path)
    data = _read_bounded(path).removeprefix(BOM)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        raise located(path, f"invalid UTF-8 at byte {err.start - line_start} of the line",
                      data.count(b"\n", 0, err.start) + 1) from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        line, what = problem(err)
        raise located(path, f"malformed YAML: {what}", line) from None
    if raw is None:
        raise located(path, "empty recipe")
    if not isinstance(raw, dict):
        raise located(path, f"a recipe is a YAML mapping of sections, got {type(raw).__name__}")
    return raw


def _read_bounded(path: Path) -> bytes:
    """At most MAX_RECIPE_BYTES of a file, FIFO or device (a recipe may come from a process
    substitution), refusing anything longer rather than reading without end."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise located(path, "no such file") from None
    except OSError as err:
        raise located(path, f"cannot read recipe ({err.strerror or err.__class__.__name__})") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise located(path, f"larger than {MAX_RECIPE_BYTES >> 20} MiB; not a recipe")
    return data


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    raw = apply_overrides(read_yaml(path), list(overrides))
    return recipe_from_dict(raw, source=str(path))


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a plain mapping in two steps: the model section by its registered config, then the rest."""
    import seqtool.tasks  # noqa: F401  (registers the tasks the schema checks against)
    from seqtool.models import MODELS

    model = raw.get("model")
    if not isinstance(model, dict) or "arch" not in model:
        raise SeqtoolError(f"{source}: model: a mapping with an 'arch' key is required")
    try:
        config_cls = MODELS.get(model["arch"]).config
    except SeqtoolError as err:
        raise SeqtoolError(f"{source}: model.arch: {err}") from None
    try:
        config = config_cls.model_validate(model)
        return Recipe.model_validate({**raw, "model": config})
    except ValidationError as err:
        prefix = ("model",) if err.title == config_cls.__name__ else ()
        raise SeqtoolError(f"{source}: {describe_error(err, prefix, config_cls)}") from None
    except SeqtoolError as err:  # an unknown task
        raise SeqtoolError(f"{source}: task: {err}") from None


def drop_retired(stored: dict[str, Any]) -> dict[str, Any]:
    """A copy of a recipe stored by an earlier seqtool (in a checkpoint) without the RETIRED keys."""
    raw = dict(stored)
    for section, key in RETIRED:
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section] = {k: v for k, v in raw[section].items() if k != key}
    return raw


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))


def describe_error(err: ValidationError, prefix: tuple, model_cls: type[BaseModel]) -> str:
    """One line for the first problem: the dotted key path, the problem and a 'did you mean'."""
    first = err.errors()[0]
    loc = prefix + tuple(first["loc"])
    key = ".".join(str(part) for part in loc) or "recipe"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key" + _suggestion(loc, model_cls)
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and not isinstance(first["input"], (dict, list, BaseModel)):
        message += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    return f"{key}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _suggestion(loc: tuple, model_cls: type[BaseModel]) -> str:
    parent = _section_class(loc[:-1], model_cls)
    if parent is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1, cutoff=0.5)
    return f"; did you mean {'.'.join(map(str, (*loc[:-1], close[0])))!r}?" if close else ""


def _section_class(loc: tuple, model_cls: type[BaseModel]) -> type[BaseModel] | None:
    """The schema class that owns the keys at `loc` (a path of field names from the recipe root)."""
    cls: Any = Recipe
    for part in loc:
        if part == "model" and cls is Recipe:
            cls = model_cls
            continue
        if isinstance(part, int) or not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            continue
        field = cls.model_fields.get(part)
        if field is None:
            return None
        cls = _unwrap(field.annotation)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """Optional[X], list[X] and X | None to X (the BaseModel inside, if any)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return annotation
