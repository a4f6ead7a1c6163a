"""``sc2tune plan``: the memory plan of a recipe, or the weight footprint of a model; with ``--gpus NxGPU`` also
the per-GPU memory under FSDP full sharding and the training time."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from sc2tune.commands.options import TrustRemoteCode, with_remote_code
from sc2tune.errors import UserError


def plan(
    recipe: Annotated[str | None, typer.Argument(
        metavar="RECIPE", show_default=False,
        help="recipe YAML file to plan (omit with --model for the weights only)")] = None,
    overrides: Annotated[list[str] | None, typer.Argument(
        metavar="KEY.SUB=VALUE", show_default=False, help="override recipe keys")] = None,
    trust_remote_code: TrustRemoteCode = False,
    model: Annotated[str | None, typer.Option(
        help="hub id, local folder or config.json: its weight footprint per load mode (with a recipe: plan the "
        "recipe on this model)")] = None,
    gpu_memory: Annotated[str | None, typer.Option(
        help="device memory to check against, e.g. 24GB, 40GB, 80GB (binary GiB)")] = None,
    device: Annotated[Literal["cuda", "cpu"], typer.Option(
        help="plan for a CUDA GPU (dtype auto = bfloat16) or for this CPU (auto = float32)")] = "cuda",
    gpus: Annotated[str | None, typer.Option(
        metavar="NxGPU",
        help="e.g. 8xA100-80GB (A100-40GB, A100-80GB, H100-80GB, L4, A10G, RTX-4090): adds per-GPU memory under "
        "FSDP full sharding and hours per epoch")] = None,
    mfu: Annotated[float, typer.Option(help="assumed model FLOPs utilisation for the time estimate")] = 0.4,
    tokens_per_epoch: Annotated[str | None, typer.Option(
        metavar="N", help="tokens per epoch for the time estimate (1.6M, 2e6); default: count the recipe's data")
    ] = None,
    compare_hours: Annotated[float | None, typer.Option(
        metavar="H", help="a reported time for the whole run: print the utilisation (MFU) it implies")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (the last stdout line)")] = False,
) -> None:
    """Predict training memory: sc2tune plan RECIPE [--gpu-memory 24GB] [--gpus 8xA100-80GB] | --model NAME.

    A recipe plus --model plans the recipe with model.name_or_path replaced."""
    from sc2tune.commands.plan_tables import print_cluster, print_footprint, print_json, print_plan

    if recipe is None:
        if model is None:
            raise UserError("give a recipe to plan, or --model NAME_OR_PATH for the weight footprint",
                            hint="sc2tune plan recipes/quickstart/alpaca.yaml --gpu-memory 24GB")
        if overrides or gpus or tokens_per_epoch or trust_remote_code:
            raise UserError("overrides, --trust-remote-code, --gpus and --tokens-per-epoch need a recipe",
                            hint="sc2tune plan RECIPE key=value ... --gpus 8xA100-80GB")
        from sc2tune.planning import weight_footprint

        footprint = weight_footprint(model)
        if as_json:
            print_json(footprint)
        else:
            print_footprint(footprint)
        return
    if (tokens_per_epoch is not None or compare_hours is not None) and gpus is None:
        raise UserError("--tokens-per-epoch and --compare-hours need --gpus (the time estimate is per GPU kind "
                        "and count)", hint="e.g. --gpus 8xA100-80GB --tokens-per-epoch 1.6M")
    if compare_hours is not None and compare_hours <= 0:
        raise UserError(f"--compare-hours {compare_hours} must be a positive number of hours", hint="e.g. 5")
    from sc2tune.planning.recipe_plan import plan_on_gpus
    from sc2tune.recipe import load_recipe

    overrides = with_remote_code(overrides, trust_remote_code)
    if model is not None:
        overrides.append(f"model.name_or_path={model}")
    memory, cluster = plan_on_gpus(load_recipe(recipe, overrides), gpu_memory, device=device, gpus=gpus, mfu=mfu,
                                   tokens_per_epoch=tokens_per_epoch)
    if as_json:
        data = cluster.to_json() if cluster else None
        if data is not None and data["time"] is not None and compare_hours is not None:
            data["time"]["implied_mfu"] = cluster.time.implied_mfu(compare_hours)  # type: ignore[union-attr]
        print_json({"recipe": recipe, **memory.to_json(), "cluster": data})
    else:
        print_plan(memory)
        if cluster is not None:
            print_cluster(cluster, compare_hours=compare_hours)
