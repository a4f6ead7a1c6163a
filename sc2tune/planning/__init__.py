"""Memory planner: will a recipe fit on a GPU, and how much do a model's weights take in each load mode.

``plan_recipe(recipe, gpu_memory)`` -> :class:`MemoryPlan`; ``weight_footprint(name_or_path)`` -> dict.
Everything is computed from the model's config alone (its module layout: written down from config.json for
StarCoder2/GPTBigCode, without importing torch, else read off a weightless meta-device model), so it works
offline for the bundled StarCoder2/StarCoder configs and for any architecture transformers knows. On ``N x GPU``,
:func:`sc2tune.planning.cluster.plan_cluster` adds the per-GPU memory under FSDP full sharding
(:mod:`~sc2tune.planning.sharding`) and the training time from FLOPs (:mod:`~sc2tune.planning.throughput`).
"""

from __future__ import annotations

from typing import Any

from sc2tune.configs import model_layout
from sc2tune.planning.plan import Component, MemoryPlan, Suggestion, parse_size
from sc2tune.planning.recipe_plan import plan_recipe
from sc2tune.planning.weights import WeightBreakdown, weight_breakdown

__all__ = ["Component", "MemoryPlan", "Suggestion", "WeightBreakdown", "parse_size", "plan_recipe",
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
