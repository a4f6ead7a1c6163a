"""sc2tune: parameter-efficient fine-tuning for the StarCoder2 code models."""

from sc2tune.errors import DataError, RecipeError, UserError
from sc2tune.recipe import Recipe, load_recipe, recipe_from_dict

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "Recipe",
    "RecipeError",
    "UserError",
    "__version__",
    "load_recipe",
    "recipe_from_dict",
]
