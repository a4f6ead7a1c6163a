"""A recipe's one-device memory plan with the changes that make it fit (:func:`plan_recipe`), and the tokens of
its data (:func:`data_tokens`, for the time estimate of :func:`sc2tune.planning.plan`)."""

from __future__ import annotations

from sc2tune.errors import UserError
from sc2tune.planning.plan import Device, MemoryPlan, plan_device
from sc2tune.planning.suggest import suggestions
from sc2tune.recipe import Recipe


def plan_recipe(recipe: Recipe, gpu_memory: int | str | None = None, *, device: Device = "cuda",
                suggest: bool = True) -> MemoryPlan:
    """Predict the per-device training memory of ``recipe``; with ``gpu_memory``, whether it fits and, when it
    does not and ``suggest``, the changes that make it fit (:func:`~sc2tune.planning.suggest.suggestions`)."""
    plan = plan_device(recipe, gpu_memory, device=device)
    if plan.gpu_memory is not None and not plan.fits and suggest:
        plan = MemoryPlan(**{**plan.__dict__, "suggestions": suggestions(recipe, plan.gpu_memory, device=device)})
    return plan


def data_tokens(recipe: Recipe) -> tuple[int, int, int, str]:
    """(tokens, examples, rows, source) of the recipe's training split, built as training would build it.

    Uses the base model's tokenizer when it can be loaded (a local folder, the built-in model, a reachable
    hub id), else the bundled StarCoder2 tokenizer (same 49152-token size; counts are then approximate).
    """
    from sc2tune.data import build_datasets
    from sc2tune.modeling import ModelSource, load_tokenizer
    from sc2tune.tiny import load_bundled_tokenizer

    try:
        tokenizer, which = load_tokenizer(ModelSource.from_recipe(recipe)), f"{recipe.model.name_or_path}'s tokenizer"
    except UserError:
        tokenizer = load_bundled_tokenizer()
        which = f"the bundled StarCoder2 tokenizer ({recipe.model.name_or_path}'s not reachable; approximate)"
    stats = build_datasets(recipe, tokenizer, show_progress=False).stats
    source = f"{recipe.data.train}: {stats.examples} examples, {stats.rows} rows, {which}"
    return stats.tokens, stats.examples, stats.rows, source
