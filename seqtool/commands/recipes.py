"""The recipe loader the commands use: every model family and task registered, then validated.

seqtool.recipe validates against the MODELS and TASKS registries without importing the packages that
fill them (recipe sits below models' code and tasks), so the two imports below are where seqtool
composes itself; a test or script that defines its own model registers it the same way.
"""

import seqtool.decoding.search  # noqa: F401  (registers the decoding strategies)
import seqtool.models  # noqa: F401  (registers every model family)
import seqtool.tasks  # noqa: F401  (registers every task with its data spec)
from seqtool.recipe import Recipe, drop_retired, dump_recipe, load_recipe, recipe_from_dict

__all__ = ["Recipe", "drop_retired", "dump_recipe", "load_recipe", "recipe_from_dict"]
