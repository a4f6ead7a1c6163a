"""Memory planner: will a recipe fit on a GPU, and how much do a model's weights take in each load mode.

``plan_recipe(recipe, gpu_memory)`` -> :class:`MemoryPlan`; ``weight_footprint(name_or_path)`` -> dict.
Everything is computed from the model's config alone (its module layout: written down from config.json for
StarCoder2/GPTBigCode, without importing torch, else read off a weightless meta-device model), so it works
offline for the bundled StarCoder2/StarCoder configs and for any architecture transformers knows. On ``N x GPU``,
:func:`sc2tune.planning.cluster.plan_cluster` adds the per-GPU memory under FSDP full sharding
(:mod:`~sc2tune.planning.sharding`) and the training time from FLOPs (:mod:`~sc2tune.planning.throughput`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from sc2tune.clihelp import Help, TrustRemoteCode
from sc2tune.configs import model_layout
from sc2tune.errors import UserError
from sc2tune.planning.plan import Component, Device, MemoryPlan, Suggestion, parse_size
from sc2tune.planning.recipe_plan import data_tokens, plan_recipe
from sc2tune.planning.throughput import DEFAULT_MFU, parse_count, parse_gpus
from sc2tune.planning.weights import WeightBreakdown, weight_breakdown

if TYPE_CHECKING:
    from sc2tune.planning.cluster import ClusterPlan

__all__ = ["Component", "MemoryPlan", "Plan", "Suggestion", "WeightBreakdown", "parse_size", "plan", "plan_recipe",
           "weight_breakdown", "weight_footprint"]

_FOOTPRINT_MODES = (("fp32", "float32"), ("bf16", "bfloat16"), ("fp16", "float16"), ("int8", "bfloat16"),
                    ("nf4", "bfloat16"))


def weight_footprint(name_or_path: str, *, head: str = "causal-lm", double_quant: bool = True,
                     revision: str | None = None) -> dict[str, Any]:
    """Weight bytes of a model in each load mode (int8/nf4 keep the rest in bf16).

    ``weights_bytes`` matches transformers' ``get_memory_footprint()`` of the model loaded that way;
    ``resident_bytes`` adds the quantisation constants (NF4 with double quant by default).
    """
    model = model_layout(name_or_path, revision=revision, head=head)
    out: dict[str, Any] = {"model": name_or_path, "model_type": model.model_type, "weights_bytes": {},
                           "resident_bytes": {}, "quant_state_bytes": {}, "skipped_linears": {}}
    for mode, dtype in _FOOTPRINT_MODES:
        w = weight_breakdown(model, mode, dtype=dtype, double_quant=double_quant)  # type: ignore[arg-type]
        out["weights_bytes"][mode] = w.footprint_bytes
        out["resident_bytes"][mode] = w.resident_bytes
        out["quant_state_bytes"][mode] = w.quant_state_bytes
        out["skipped_linears"][mode] = list(w.skipped_linears)
        out["params"] = w.params
    return out


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` found: a model's weight footprint (no recipe), or a recipe's memory plan and, with
    ``gpus``, its cluster plan (and the ``compare_hours`` asked about)."""

    recipe: str | None
    footprint: dict[str, Any] | None = None
    memory: MemoryPlan | None = None
    cluster: ClusterPlan | None = None
    compare_hours: float | None = None


def plan(
    recipe: Annotated[str | None, Help("recipe YAML file to plan (omit with --model for the weights only)",
                                       metavar="RECIPE", positional=True)] = None,
    overrides: Annotated[list[str] | None, Help("override recipe keys", metavar="KEY.SUB=VALUE", positional=True)
                         ] = None,
    *,
    trust_remote_code: TrustRemoteCode = False,
    model: Annotated[str | None, Help("hub id, local folder or config.json: its weight footprint per load mode "
                                      "(with a recipe: plan the recipe on this model)")] = None,
    gpu_memory: Annotated[str | None, Help(
        "device memory to check against, e.g. 80GiB: 24GiB = 24 x 2^30 bytes, 24GB = 24 x 10^9 bytes")] = None,
    device: Annotated[Device, Help(
        "plan for a CUDA GPU (dtype auto = bfloat16) or for this CPU (auto = float32)")] = "cuda",
    gpus: Annotated[str | None, Help(
        "e.g. 8xA100-80GB (A100-40GB, A100-80GB, H100-80GB, L4, A10G, RTX-4090): adds per-GPU memory under FSDP "
        "full sharding and hours per epoch", metavar="NxGPU")] = None,
    mfu: Annotated[float, Help("assumed model FLOPs utilisation for the time estimate")] = DEFAULT_MFU,
    tokens_per_epoch: Annotated[str | None, Help(
        "tokens per epoch for the time estimate (1.6M, 2e6); default: count the recipe's data", metavar="N")] = None,
    compare_hours: Annotated[float | None, Help(
        "a reported time for the whole run: print the utilisation (MFU) it implies", metavar="H")] = None,
) -> Plan:
    """The weight footprint of ``model`` (no recipe), or the plan of ``recipe`` (``model`` replacing its
    ``model.name_or_path``) on one device and, with ``gpus`` (``8xA100-80GB``), on that cluster.

    Without ``gpu_memory`` the plan is checked against the cluster GPU's memory. The time estimate is for
    ``tokens_per_epoch`` (``1.6M``) or, by default, the tokens of the recipe's data (:func:`data_tokens`),
    over ``train.epochs`` or, when ``train.max_steps`` is set, ``max_steps x batch x grad_accum x N / rows``
    epochs, at utilisation ``mfu``. With several GPUs, changes that make one device fit are only suggested
    when FSDP sharding does not fit either.
    """
    if recipe is None:
        if model is None:
            raise UserError("give a recipe to plan, or --model NAME_OR_PATH for the weight footprint",
                            hint="sc2tune plan recipes/quickstart/alpaca.yaml --gpu-memory 24GB")
        if overrides or gpus or tokens_per_epoch or trust_remote_code:
            raise UserError("overrides, --trust-remote-code, --gpus and --tokens-per-epoch need a recipe",
                            hint="sc2tune plan RECIPE key=value ... --gpus 8xA100-80GB")
        return Plan(None, footprint=weight_footprint(model))
    if (tokens_per_epoch is not None or compare_hours is not None) and gpus is None:
        raise UserError("--tokens-per-epoch and --compare-hours need --gpus (the time estimate is per GPU kind "
                        "and count)", hint="e.g. --gpus 8xA100-80GB --tokens-per-epoch 1.6M")
    if compare_hours is not None and compare_hours <= 0:
        raise UserError(f"--compare-hours {compare_hours} must be a positive number of hours", hint="e.g. 5")
    from sc2tune.recipe import REMOTE_CODE_OVERRIDE, load_recipe

    loaded = load_recipe(recipe, [*(overrides or ()), *([REMOTE_CODE_OVERRIDE] if trust_remote_code else []),
                                  *([f"model.name_or_path={model}"] if model is not None else [])])
    cluster_gpu = parse_gpus(gpus) if gpus else None
    if cluster_gpu is not None and gpu_memory is None:
        gpu_memory = f"{cluster_gpu[1].memory_gib}GiB"  # the presets are in GiB
    several = cluster_gpu is not None and cluster_gpu[0] > 1
    memory = plan_recipe(loaded, gpu_memory, device=device, suggest=not several)
    if cluster_gpu is None:
        return Plan(recipe, memory=memory)
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
    cluster = plan_cluster(loaded, memory, gpus=count, gpu=spec, tokens_per_epoch=tokens, epochs=epochs,
                           mfu=mfu, tokens_source=source, device=device)
    if several and not memory.fits and not cluster.fsdp.fits:
        memory = plan_recipe(loaded, gpu_memory, device=device)
    return Plan(recipe, memory=memory, cluster=cluster, compare_hours=compare_hours)
