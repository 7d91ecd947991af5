"""The base of every model's typed config (kept free of torch so recipes validate quickly)."""

from typing import ClassVar

from pydantic import BaseModel, ConfigDict

# Every recipe section: an unknown key is an error, and so is .inf or .nan (YAML floats no setting
# means; a bound like gt=0 lets .inf through).
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelConfig(BaseModel):
    """A model section of a recipe: `arch` picks the registry entry, the rest is its config.

    Class variables declare what the model can do, so that a recipe asking for something
    impossible (a coverage penalty without attention, translation with a language model)
    fails when it is loaded rather than during decoding.
    """

    model_config = SECTION

    arch: str
    tasks: ClassVar[tuple[str, ...]] = ()
    has_attention: ClassVar[bool] = False

    def recipe_problems(self, recipe) -> list[str]:
        """Conflicts between this model section and the rest of the recipe (the model's own checks,
        run with the recipe's cross-field rules at load time); none by default."""
        return []
