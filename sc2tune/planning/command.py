"""``sc2tune plan``: the memory plan of a recipe, or the weight footprint of a model."""

from __future__ import annotations

from sc2tune.errors import UserError
from sc2tune.planning import plan_recipe, weight_footprint
from sc2tune.planning.report import print_footprint, print_json, print_plan
from sc2tune.recipe import load_recipe


def plan_command(recipe: str | None, overrides: list[str], *, model: str | None = None,
                 gpu_memory: str | None = None, device: str = "cuda", as_json: bool = False) -> int:
    """Print the plan of ``recipe`` (+ overrides) or, with ``model`` alone, its weight footprint.

    With ``as_json`` the last stdout line is one JSON object. A recipe plus ``model`` plans the recipe with
    ``model.name_or_path`` replaced.
    """
    if recipe is None:
        if model is None:
            raise UserError("give a recipe to plan, or --model NAME_OR_PATH for the weight footprint",
                            hint="sc2tune plan recipes/quickstart/alpaca.yaml --gpu-memory 24GB")
        if overrides:
            raise UserError("overrides need a recipe", hint="sc2tune plan RECIPE key=value ...")
        footprint = weight_footprint(model)
        if as_json:
            print_json(footprint)
        else:
            print_footprint(footprint)
        return 0
    if model is not None:
        overrides = [*overrides, f"model.name_or_path={model}"]
    if device not in ("cuda", "cpu"):
        raise UserError(f"--device '{device}' is not cuda or cpu")
    plan = plan_recipe(load_recipe(recipe, overrides), gpu_memory, device=device)  # type: ignore[arg-type]
    if as_json:
        print_json({"recipe": recipe, **plan.to_json()})
    else:
        print_plan(plan)
    return 0
