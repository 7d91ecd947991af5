"""Recipe values that pick a registered component with options: `cell: lstm` or `cell: {name: arma, p: 2}`.

A component registry (cells, norms) maps names to builders and typed configs, like MODELS. A recipe
may give the bare name (all options at their defaults) or a mapping with `name` and options; either
way it is validated into the entry's config class, and written back as the bare name when every
option is at its default, so recipes and checkpoints written before a component gained options stay
identical.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, SerializeAsAny, ValidationError, model_serializer

from seqtool.models.config import SECTION
from seqtool.registry import Registry


class ComponentConfig(BaseModel):
    """The options of one registered component; subclasses add typed fields with descriptions."""

    model_config = ConfigDict(**SECTION, frozen=True)
    reference_type: ClassVar[str] = "a name, or {name: ..., option: value}"  # for `seqtool keys`

    name: str

    @model_serializer(mode="wrap")
    def _short_form(self, handler) -> Any:
        changed = [k for k, f in type(self).model_fields.items() if k != "name" and getattr(self, k) != f.default]
        return handler(self) if changed else self.name

    def __eq__(self, other: object) -> bool:
        """Equal to its bare name when every option is at its default (`cfg.cell == "lstm"` keeps working)."""
        if isinstance(other, str):
            return self.model_dump() == other
        return super().__eq__(other)

    def __hash__(self) -> int:
        return hash(self.model_dump_json())


def parse_component(registry: Registry, value: Any) -> ComponentConfig:
    """A name or a {name: ..., option: ...} mapping -> the registered config (ValueError when wrong)."""
    if isinstance(value, ComponentConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"a {registry.kind} is a name or a mapping with a 'name' key (got {value!r})")
    name = value["name"]
    if name not in registry.names():
        raise ValueError(registry.unknown(name))
    try:
        return registry.get(name).config.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{registry.kind} {name!r}: {where}: {first['msg']}") from None


def component_field(registry: Registry) -> Any:
    """The pydantic type of a recipe key naming a component of `registry`."""
    return Annotated[SerializeAsAny[ComponentConfig], BeforeValidator(partial(parse_component, registry))]
