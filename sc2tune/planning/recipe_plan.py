"""A recipe's plan: the one-device memory plan with the changes that make it fit (:func:`plan_recipe`) and, on
``N x GPU``, the per-GPU memory under FSDP full sharding and the training time for the tokens of the recipe's
data (or a given count)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sc2tune.errors import UserError
from sc2tune.planning.plan import Device, MemoryPlan, plan_device
from sc2tune.planning.suggest import suggestions
from sc2tune.planning.throughput import DEFAULT_MFU, parse_count, parse_gpus
from sc2tune.recipe import Recipe

if TYPE_CHECKING:
    from sc2tune.planning.cluster import ClusterPlan

log = logging.getLogger(__name__)


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


def plan_on_gpus(recipe: Recipe, gpu_memory: str | None = None, *, device: Device = "cuda",
                 gpus: str | None = None, mfu: float = DEFAULT_MFU, tokens_per_epoch: str | None = None
                 ) -> tuple[MemoryPlan, ClusterPlan | None]:
    """The plan of ``recipe`` on one device and, with ``gpus`` (``8xA100-80GB``), on that cluster.

    Without ``gpu_memory`` the plan is checked against the cluster GPU's memory. The time estimate is for
    ``tokens_per_epoch`` (``1.6M``) or, by default, the tokens of the recipe's data (:func:`data_tokens`),
    over ``train.epochs`` or, when ``train.max_steps`` is set, ``max_steps x batch x grad_accum x N / rows``
    epochs, at utilisation ``mfu``. With several GPUs, changes that make one device fit are only suggested
    when FSDP sharding does not fit either.
    """
    cluster_gpu = parse_gpus(gpus) if gpus else None
    if cluster_gpu is not None and gpu_memory is None:
        gpu_memory = f"{cluster_gpu[1].memory_gib}GiB"  # the presets are in GiB
    several = cluster_gpu is not None and cluster_gpu[0] > 1
    plan = plan_recipe(recipe, gpu_memory, device=device, suggest=not several)
    if cluster_gpu is None:
        return plan, None
    from sc2tune.planning.cluster import plan_cluster

    count, spec = cluster_gpu
    epochs = None
    if tokens_per_epoch is not None:
        tokens, source = parse_count(tokens_per_epoch), "--tokens-per-epoch"
    else:
        tokens, _, rows, source = data_tokens(recipe)
        t = recipe.train
        if t.max_steps is not None:  # the run is max_steps optimizer steps, not train.epochs
            epochs = t.max_steps * t.batch_size * t.grad_accum * count / max(rows, 1)
    cluster = plan_cluster(recipe, plan, gpus=count, gpu=spec, tokens_per_epoch=tokens, epochs=epochs,
                           mfu=mfu, tokens_source=source, device=device)
    if several and not plan.fits and not cluster.fsdp.fits:
        plan = plan_recipe(recipe, gpu_memory, device=device)
    return plan, cluster
