"""sc2tune: parameter-efficient fine-tuning for the StarCoder2 code models.

The Python API mirrors the CLI: ``load_recipe`` -> ``train`` -> ``merge`` -> ``generate`` / ``infill`` /
``instruct`` / ``classify``; ``evaluate_run`` / ``evaluate_code`` evaluate; ``plan_recipe`` predicts memory;
``build_datasets`` previews the data.
Heavy modules are imported on first use, so ``import sc2tune`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from sc2tune.errors import DataError, RecipeError, UserError

__version__ = "0.1.0"

_LAZY = {
    "Recipe": "sc2tune.recipe",
    "load_recipe": "sc2tune.recipe",
    "recipe_from_dict": "sc2tune.recipe",
    "train": "sc2tune.training",
    "TrainResult": "sc2tune.training.run",
    "build_datasets": "sc2tune.data",
    "merge": "sc2tune.merging",
    "generate": "sc2tune.generation",
    "infill": "sc2tune.generation",
    "instruct": "sc2tune.generation",
    "classify": "sc2tune.generation",
    "load_for_inference": "sc2tune.generation",
    "Sampling": "sc2tune.generation",
    "plan_recipe": "sc2tune.planning",
    "weight_footprint": "sc2tune.planning",
    "quickstart": "sc2tune.demo",
    "evaluate_code": "sc2tune.evaluation.codeeval",
    "evaluate_run": "sc2tune.evaluation.runeval",
    "resolve_run": "sc2tune.evaluation.runeval",
}

__all__ = ["DataError", "RecipeError", "UserError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sc2tune' has no attribute {name!r}")
