"""The base of every model's typed config (kept free of torch so recipes validate quickly)."""

from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    """A model section of a recipe: `arch` picks the registry entry, the rest is its config.

    Class variables declare what the model can do, so that a recipe asking for something
    impossible (a coverage penalty without attention, translation with a language model)
    fails when it is loaded rather than during decoding.
    """

    model_config = ConfigDict(extra="forbid")

    arch: str
    tasks: ClassVar[tuple[str, ...]] = ()
    has_attention: ClassVar[bool] = False

    def recipe_problems(self, recipe) -> list[str]:
        """Conflicts between this model section and the rest of the recipe (the model's own checks,
        run with the recipe's cross-field rules at load time); none by default."""
        return []
