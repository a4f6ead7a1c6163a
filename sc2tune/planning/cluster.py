"""A recipe on ``N x GPU``: per-GPU memory under FSDP full sharding and the training time.

Composes the single-device :class:`~sc2tune.planning.plan.MemoryPlan` with :mod:`sc2tune.planning.sharding`
(memory) and :mod:`sc2tune.planning.throughput` (FLOPs and hours), on the same model layout the memory
plan uses.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sc2tune.configs import model_layout
from sc2tune.planning.plan import FIT_FRACTION, Device, GiB, MemoryPlan, model_dtype_name
from sc2tune.planning.sharding import ShardedMemory, fsdp_memory, gathered_bytes
from sc2tune.planning.structure import adapter_shape, block_spec, resolve_targets
from sc2tune.planning.throughput import DEFAULT_MFU, GpuSpec, TimeEstimate, estimate_time, training_flops
from sc2tune.planning.weights import DTYPE_BYTES
from sc2tune.recipe import Recipe


@dataclass(frozen=True)
class ClusterPlan:
    """What ``sc2tune plan RECIPE --gpus NxGPU`` adds to the memory plan."""

    gpu: GpuSpec
    gpus: int
    fsdp: ShardedMemory
    replicated_fits: bool  #: the single-device plan (DDP: every GPU holds everything) fits one GPU
    time: TimeEstimate | None  #: None when the number of tokens is unknown

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu.name, "gpus": self.gpus, "gpu_memory": self.gpu.memory_gib * GiB,
                "replicated_fits": self.replicated_fits, "fsdp": asdict(self.fsdp),
                "time": asdict(self.time) if self.time else None}


def plan_cluster(recipe: Recipe, plan: MemoryPlan, *, gpus: int, gpu: GpuSpec, tokens_per_epoch: int | None,
                 epochs: float | None = None, mfu: float = DEFAULT_MFU, tokens_source: str = "",
                 device: Device = "cuda") -> ClusterPlan:
    """FSDP per-GPU memory over ``gpus`` ranks and, with ``tokens_per_epoch``, the hours of training."""
    spec, adapter = recipe.model, recipe.adapter
    model = model_layout(spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code,
                         head=spec.head, num_labels=spec.num_labels or 2)
    dtype_bytes = DTYPE_BYTES[model_dtype_name(recipe, device)]
    memory = gpu.memory_gib * GiB
    fsdp = fsdp_memory(plan, gpus, gathered=gathered_bytes(model, dtype_bytes), buffers=model.buffer_bytes(),
                       gpu_memory=memory)
    time = None
    if tokens_per_epoch is not None:
        full = adapter.method == "full"
        targets = () if full else resolve_targets(model, adapter.target_modules)
        shape = adapter_shape(model, targets, r=adapter.r, dora=adapter.use_dora, modules_to_save=[])
        block, _ = block_spec(model, targets, full=full)
        flops = training_flops(model, method=adapter.method, lora_params=shape.lora_params,
                               length=recipe.data.max_length, q_width=block.q_width,
                               gradient_checkpointing=recipe.train.gradient_checkpointing)
        time = estimate_time(flops, tokens_per_epoch=tokens_per_epoch,
                             epochs=recipe.train.epochs if epochs is None else epochs, gpus=gpus, gpu=gpu,
                             mfu=mfu, tokens_source=tokens_source)
    return ClusterPlan(gpu, gpus, fsdp, plan.total_bytes <= FIT_FRACTION * memory, time)
