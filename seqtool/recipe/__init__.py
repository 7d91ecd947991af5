"""Loading, validating and writing recipes."""

from __future__ import annotations

import codecs
import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seqtool.errors import SeqtoolError, located
from seqtool.recipe.overrides import apply_overrides
from seqtool.recipe.schema import SPLIT_FORMS, Recipe
from seqtool.recipe.strict_yaml import load_yaml, problem
from seqtool.registry import MODELS, TASKS, Registry
from seqtool.util.files import atomic_write_text

__all__ = ["Recipe", "load_recipe", "recipe_from_dict", "dump_recipe", "read_yaml", "drop_retired"]
# Keys that earlier versions wrote into every run's recipe and checkpoint: a stored recipe loses them
# (drop_retired), a recipe a user gives that still sets one fails as an unknown key.
RETIRED = (("data", "workers"),)


MAX_RECIPE_BYTES = 1 << 20


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Safely load a YAML mapping, with errors that name the file and line."""
    path = Path(path)
    data = _read_bounded(path).removeprefix(codecs.BOM_UTF8)
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
    """Validate a plain mapping in two steps: the model section by its arch's registered config and the
    data section by its task's registered data spec, then the rest.

    The MODELS and TASKS registries must be filled first (seqtool.commands.recipes does it)."""
    model = raw.get("model")
    if not isinstance(model, dict) or "arch" not in model:
        raise SeqtoolError(f"{source}: model: a mapping with an 'arch' key is required")
    task = raw.get("task", Recipe.model_fields["task"].default)
    sections = {"model": _registered(MODELS, model["arch"], f"{source}: model.arch"),
                "data": _registered(TASKS, task, f"{source}: task")}
    try:
        valid = {key: cls.model_validate(raw[key]) for key, cls in sections.items() if isinstance(raw.get(key), dict)}
        return Recipe.model_validate({**raw, **valid})
    except ValidationError as err:
        prefix = next(((key,) for key, cls in sections.items() if err.title == cls.__name__), ())
        message = _other_task_key(err, prefix, task) or describe_error(err, prefix, sections)
        raise SeqtoolError(f"{source}: {message}") from None


def _registered(registry: Registry, name: Any, where: str) -> type[BaseModel]:
    try:
        return registry.get(name).config
    except SeqtoolError as err:
        raise SeqtoolError(f"{where}: {err}") from None


def _other_task_key(err: ValidationError, prefix: tuple, task: str) -> str | None:
    """A data key of another task (the likelier slip than the keys it leaves missing): name that task."""
    if prefix != ("data",):
        return None
    for error in err.errors():
        if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
            key = error["loc"][0]
            owners = [name for name in TASKS.names() if key in TASKS.get(name).config.model_fields]
            if owners:
                return f"data.{key} is read by task {owners[0]!r} (not {task!r})"
    return None


def drop_retired(stored: dict[str, Any]) -> dict[str, Any]:
    """A copy of a recipe stored by an earlier seqtool (in a checkpoint), in today's shape: without the
    RETIRED keys; a data section written when it held every task's keys (the other tasks' unset) keeps
    only those its task's data spec has; decode.sample (a bool) becomes decode.strategy."""
    raw = dict(stored)
    for section, key in RETIRED:
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raw[section] = {k: v for k, v in raw[section].items() if k != key}
    data, task = raw.get("data"), raw.get("task", Recipe.model_fields["task"].default)
    if isinstance(data, dict) and task in TASKS.names():
        known = TASKS.get(task).config.model_fields
        raw["data"] = {k: v for k, v in data.items() if k in known}
    decode = raw.get("decode")
    if isinstance(decode, dict) and "sample" in decode:
        strategy = "sample" if decode["sample"] else "beam"
        raw["decode"] = {**{k: v for k, v in decode.items() if k != "sample"}, "strategy": strategy}
    return raw


def dump_recipe(recipe: Recipe, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False))


def describe_error(err: ValidationError, prefix: tuple, sections: dict[str, type[BaseModel]]) -> str:
    """One line for the first problem: the dotted key path, the problem and a 'did you mean'."""
    first = err.errors()[0]
    loc = prefix + tuple(part for part in first["loc"] if part not in SPLIT_FORMS)
    key = ".".join(str(part) for part in loc) or "recipe"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key" + _suggestion(loc, sections)
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and not isinstance(first["input"], (dict, list, BaseModel)):
        message += f" (got {first['input']!r})"
    more = len(err.errors()) - 1
    return f"{key}: {message}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _suggestion(loc: tuple, sections: dict[str, type[BaseModel]]) -> str:
    parent = _section_class(loc[:-1], sections)
    if parent is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(parent.model_fields), n=1, cutoff=0.5)
    return f"; did you mean {'.'.join(map(str, (*loc[:-1], close[0])))!r}?" if close else ""


def _section_class(loc: tuple, sections: dict[str, type[BaseModel]]) -> type[BaseModel] | None:
    """The schema class that owns the keys at `loc` (a path of field names from the recipe root;
    `sections`: the registered classes of the recipe's model and data)."""
    cls: Any = Recipe
    for part in loc:
        if part in sections and cls is Recipe:
            cls = sections[part]
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
