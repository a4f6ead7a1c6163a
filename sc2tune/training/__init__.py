"""Training: the trainer wrapper, its callbacks and the chunked causal-LM loss (:mod:`sc2tune.training.run`).

:func:`train` is light to import (``sc2tune train`` reads its signature): the training stack (torch,
transformers, peft) is imported when it runs, after a hub model is found reachable."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from sc2tune.clihelp import Help
from sc2tune.recipe import Recipe

if TYPE_CHECKING:
    from sc2tune.training.run import TrainResult


def train(
    recipe: Recipe,
    *,
    resume: Annotated[bool, Help("continue from the newest complete checkpoint in output_dir/checkpoints",
                                 flag="--resume")] = False,
    show_progress: Annotated[bool, Help("no progress bar", flag="--no-progress")] = True,
) -> TrainResult:
    """Fine-tune the recipe's model on its data and write the adapter (:func:`sc2tune.training.run.train`)."""
    from sc2tune.modeling import ensure_model_reachable

    ensure_model_reachable(recipe.model)  # before the training stack's imports: an unreachable hub fails at once
    from sc2tune.training import run

    return run.train(recipe, resume=resume, show_progress=show_progress)


__all__ = ["train"]
