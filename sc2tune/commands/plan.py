"""``sc2tune plan``: the memory plan of a recipe, or the weight footprint of a model; with ``--gpus NxGPU`` also
the per-GPU memory under FSDP full sharding and the training time. The options are those of
:func:`sc2tune.planning.plan`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sc2tune.commands.derive import Command

if TYPE_CHECKING:
    from sc2tune.planning import Plan


def show_plan(found: Plan, as_json: Annotated[bool, typer.Option(
        "--json", help="print one JSON object (the last stdout line)")] = False) -> None:
    """Predict training memory: sc2tune plan RECIPE [--gpu-memory 24GB] [--gpus 8xA100-80GB] | --model NAME.

    A recipe plus --model plans the recipe with model.name_or_path replaced."""
    from sc2tune.commands.plan_tables import print_cluster, print_footprint, print_json, print_plan

    if found.footprint is not None:
        (print_json if as_json else print_footprint)(found.footprint)
        return
    memory, cluster = found.memory, found.cluster
    assert memory is not None
    if as_json:
        data = cluster.to_json() if cluster else None
        if data is not None and data["time"] is not None and found.compare_hours is not None:
            data["time"]["implied_mfu"] = cluster.time.implied_mfu(found.compare_hours)  # type: ignore[union-attr]
        print_json({"recipe": found.recipe, **memory.to_json(), "cluster": data})
    else:
        print_plan(memory)
        if cluster is not None:
            print_cluster(cluster, compare_hours=found.compare_hours)


plan = Command(show_plan, api="sc2tune.planning:plan")
