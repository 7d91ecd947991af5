"""The base of every model's typed config (kept free of torch so recipes validate quickly)."""

import math
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


def position_problems(recipe, max_positions: int) -> list[str]:
    """A translation model with a table of `max_positions` learned positions: the sequences the recipe
    lets through (training, decoding input and output) must fit it, or the run would fail mid-way."""
    d, limit = recipe.decode, f"exceeds model.max_positions {max_positions}"
    problems = []
    if recipe.data.max_len + 1 > max_positions:
        problems.append(f"data.max_len {recipe.data.max_len} (+ EOS) {limit}")
    if d.max_src_len + 1 > max_positions:
        problems.append(f"decode.max_src_len {d.max_src_len} (+ EOS) {limit}")
    longest = math.floor(d.max_len_a * d.max_src_len) + d.max_len_b
    if min(longest, d.max_output) > max_positions:
        problems.append(f"decode.max_len_a * decode.max_src_len + decode.max_len_b ({longest}) {limit}")
    return problems
