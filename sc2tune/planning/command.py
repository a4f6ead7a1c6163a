"""``sc2tune plan``: the memory plan of a recipe, or the weight footprint of a model; with ``--gpus NxGPU`` also
the per-GPU memory under FSDP full sharding and the training time."""

from __future__ import annotations

import logging

from sc2tune.errors import UserError
from sc2tune.planning import plan_recipe, weight_footprint
from sc2tune.planning.report import print_cluster, print_footprint, print_json, print_plan
from sc2tune.planning.throughput import DEFAULT_MFU, parse_count, parse_gpus
from sc2tune.recipe import Recipe, load_recipe

log = logging.getLogger(__name__)


def data_tokens(recipe: Recipe) -> tuple[int, int, int, str]:
    """(tokens, examples, rows, source) of the recipe's training split, built as training would build it.

    Uses the base model's tokenizer when it can be loaded (a local folder, the built-in model, a reachable
    hub id), else the bundled StarCoder2 tokenizer (same 49152-token size; counts are then approximate).
    """
    from sc2tune.data import build_datasets
    from sc2tune.modeling import load_tokenizer
    from sc2tune.tiny import load_bundled_tokenizer

    try:
        tokenizer, which = load_tokenizer(recipe.model), f"{recipe.model.name_or_path}'s tokenizer"
    except UserError:
        tokenizer = load_bundled_tokenizer()
        which = f"the bundled StarCoder2 tokenizer ({recipe.model.name_or_path}'s not reachable; approximate)"
    stats = build_datasets(recipe, tokenizer, show_progress=False).stats
    source = f"{recipe.data.train}: {stats.examples} examples, {stats.rows} rows, {which}"
    return stats.tokens, stats.examples, stats.rows, source


def plan_command(recipe: str | None, overrides: list[str], *, model: str | None = None,
                 gpu_memory: str | None = None, device: str = "cuda", as_json: bool = False,
                 gpus: str | None = None, mfu: float = DEFAULT_MFU, tokens_per_epoch: str | None = None,
                 compare_hours: float | None = None) -> int:
    """Print the plan of ``recipe`` (+ overrides) or, with ``model`` alone, its weight footprint.

    With ``as_json`` the last stdout line is one JSON object. A recipe plus ``model`` plans the recipe with
    ``model.name_or_path`` replaced. ``gpus`` (``8xA100-80GB``) adds FSDP per-GPU memory and the training time
    at utilisation ``mfu``, for ``tokens_per_epoch`` (``1.6M``) or, by default, the tokens of the recipe's data;
    without ``gpu_memory`` the plan is checked against that GPU's memory. ``compare_hours`` (a reported
    training time) prints the utilisation that time implies.
    """
    if recipe is None:
        if model is None:
            raise UserError("give a recipe to plan, or --model NAME_OR_PATH for the weight footprint",
                            hint="sc2tune plan recipes/quickstart/alpaca.yaml --gpu-memory 24GB")
        if overrides or gpus or tokens_per_epoch:
            raise UserError("overrides, --gpus and --tokens-per-epoch need a recipe",
                            hint="sc2tune plan RECIPE key=value ... --gpus 8xA100-80GB")
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
    if (tokens_per_epoch is not None or compare_hours is not None) and gpus is None:
        raise UserError("--tokens-per-epoch and --compare-hours need --gpus (the time estimate is per GPU kind "
                        "and count)", hint="e.g. --gpus 8xA100-80GB --tokens-per-epoch 1.6M")
    if compare_hours is not None and compare_hours <= 0:
        raise UserError(f"--compare-hours {compare_hours} must be a positive number of hours", hint="e.g. 5")
    loaded = load_recipe(recipe, overrides)
    cluster_gpu = parse_gpus(gpus) if gpus else None
    if cluster_gpu is not None and gpu_memory is None:
        gpu_memory = f"{cluster_gpu[1].memory_gib}GiB"  # the presets are in GiB
    # with several GPUs, ways to fit one device are only worth listing when sharding does not fit either
    several = cluster_gpu is not None and cluster_gpu[0] > 1
    plan = plan_recipe(loaded, gpu_memory, device=device, suggest=not several)  # type: ignore[arg-type]
    cluster = None
    if cluster_gpu is not None:
        from sc2tune.planning.cluster import plan_cluster

        count, spec = cluster_gpu
        epochs = None
        if tokens_per_epoch is not None:
            tokens, source = parse_count(tokens_per_epoch), "--tokens-per-epoch"
        else:
            tokens, _, rows, source = data_tokens(loaded)
            t = loaded.train
            if t.max_steps is not None:  # the run is max_steps optimizer steps, not train.epochs
                epochs = t.max_steps * t.batch_size * t.grad_accum * count / max(rows, 1)
        cluster = plan_cluster(loaded, plan, gpus=count, gpu=spec, tokens_per_epoch=tokens, epochs=epochs,
                               mfu=mfu, tokens_source=source, device=device)  # type: ignore[arg-type]
        if several and not plan.fits and not cluster.fsdp.fits:
            plan = plan_recipe(loaded, gpu_memory, device=device)  # type: ignore[arg-type]
    if as_json:
        data = cluster.to_json() if cluster else None
        if data is not None and data["time"] is not None and compare_hours is not None:
            data["time"]["implied_mfu"] = cluster.time.implied_mfu(compare_hours)  # type: ignore[union-attr]
        print_json({"recipe": recipe, **plan.to_json(), "cluster": data})
    else:
        print_plan(plan)
        if cluster is not None:
            print_cluster(cluster, compare_hours=compare_hours)
    return 0
