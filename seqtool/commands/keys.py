"""A reference of every recipe key, generated from the schema (the README's table comes from here)."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from seqtool.commands.recipes import Recipe


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:  # a discriminated union's branch
        return _type_name(args[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        return f"{origin.__name__} of " + ", ".join(_type_name(a) for a in args if a is not Ellipsis)
    if getattr(annotation, "reference_type", None):  # a registered component (cell, norm)
        return annotation.reference_type
    name = getattr(annotation, "__name__", str(annotation))
    return "section" if name == "SplitSpec" else name


def _default(field) -> str:
    if field.default is not PydanticUndefined:
        return repr(field.default) if not isinstance(field.default, BaseModel) else ""
    if field.default_factory is not None:
        value = field.default_factory()
        return "" if isinstance(value, BaseModel) else repr(value)
    return "required"


def _rows(cls: type[BaseModel], prefix: str) -> list[str]:
    rows, listed = [], set()
    for name, field in cls.model_fields.items():
        key = f"{prefix}{name}"
        inner = _nested(field.annotation)
        if name == "data" and cls is Recipe:  # each task's own section, listed after this table
            continue
        if inner is not None and name != "model" and not getattr(inner, "reference_type", None):
            rows.extend(_rows(inner, f"{key}."))
            continue
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
        item = _list_item(field.annotation)
        if item is not None and item not in listed:  # the keys of a list's entries, once per kind of entry
            listed.add(item)
            rows.extend(_rows(item, f"{key}[i]."))
    return rows


def _list_item(annotation: Any) -> type[BaseModel] | None:
    """The model class of a list's entries somewhere in an annotation (data.train's corpora), or None."""
    if typing.get_origin(annotation) is list:
        item = typing.get_args(annotation)[0]
        return item if isinstance(item, type) and issubclass(item, BaseModel) else None
    return next(filter(None, map(_list_item, typing.get_args(annotation))), None)


def _nested(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel) and arg.__name__ != "SplitSpec":
            return arg
    return None


def _component_tables(header: str) -> list[str]:
    """The options of each registered cell and norm (`model.cell: {name: ..., option: ...}`)."""
    from seqtool.models.recurrent.cells import CELLS
    from seqtool.models.recurrent.norms import NORMS

    parts = []
    for key, registry in (("cell", CELLS), ("norm", NORMS)):
        parts += ["", f"`model.{key}` names a registered {registry.kind}: {', '.join(registry.names())}"]
        for name in registry.names():
            rows = _rows(registry.get(name).config, f"model.{key}.")[1:]  # after `name`
            if rows:
                parts += ["", f"`model.{key}` with `name: {name}`", "", header, *rows]
    return parts


def _data_tables(header: str) -> list[str]:
    """The data section of each registered task (tasks that share a spec share a table)."""
    from seqtool.registry import TASKS

    owners: dict[type, list[str]] = {}
    for name in TASKS.names():
        owners.setdefault(TASKS.get(name).config, []).append(name)
    parts = []
    for spec, names in owners.items():
        parts += ["", f"`data` with `task: {' or '.join(names)}`", "", header, *_rows(spec, "data.")]
    return parts


def markdown_reference(models: bool = True) -> str:
    """Markdown tables: the recipe's sections, each registered task's data section, then each registered
    model's keys."""
    from seqtool.registry import MODELS

    header = "| key | type | default | meaning |\n| --- | --- | --- | --- |"
    parts = [header, *_rows(Recipe, ""), *_data_tables(header)]
    if models:
        for name in MODELS.names():
            config = MODELS.get(name).config
            parts += ["", f"`model` with `arch: {name}`", "", header, *_rows(config, "model.")]
        parts += _component_tables(header)
    return "\n".join(parts) + "\n"
