"""Per-GPU memory under FSDP full sharding (``recipes/accelerate/fsdp.yaml``: one decoder layer per unit).

From the single-device :class:`~sc2tune.planning.plan.MemoryPlan`, for ``N`` GPUs::

    per GPU = (weights + quantisation constants + trained parameters + gradients + optimizer states
               - buffers) / N                                 sharded: every rank owns 1/N of each
            + buffers (GPTBigCode's causal mask, rotary tables): not parameters, every rank keeps them whole
            + activations + max(logits and loss, backward workspace)      per rank, as on one device
            + gathered units: the root unit (embeddings, final norm, output layer: every parameter outside
              the decoder layers) + 2 decoder layers (the one computing and the one prefetched),
              whole, in the compute dtype
            + framework overhead (CUDA context, kernels' workspace)

Under accelerate's FSDP with bf16 mixed precision the sharded parameters are kept in fp32 and gathered in
bf16; the planner's full fine-tuning figure counts exactly that: 16 bytes per parameter (fp32 weights, fp32
gradients, two fp32 Adam moments), as a 16-bit full fine-tune holds outside FSDP too.
Communication buffers beyond the gathered units are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sc2tune.architectures import ModelLayout
from sc2tune.planning.plan import FIT_FRACTION, MemoryPlan
from sc2tune.planning.structure import decoder_layers

#: Components of a MemoryPlan that FSDP shards across the ranks.
SHARDED = ("weights", "quantisation constants", "adapter parameters", "gradients", "optimizer states")
TRANSIENT = ("logits and loss", "backward workspace")


@dataclass(frozen=True)
class ShardedMemory:
    """Per-GPU bytes under FSDP full sharding over ``gpus`` ranks."""

    gpus: int
    sharded_total: int  #: sum of the sharded components on one device, before dividing
    sharded_per_gpu: int
    buffers: int  #: registered buffers, replicated on every rank
    activations: int  #: saved activations + the transient peak (loss or one layer's backward)
    gathered: int  #: root unit + two decoder layers, unsharded, in the compute dtype
    overhead: int
    total: int
    gpu_memory: int | None = None
    fits: bool | None = None


def gathered_bytes(layout: ModelLayout, dtype_bytes: int) -> int:
    """Root unit (parameters outside the decoder layers) + two decoder layers, at ``dtype_bytes`` each."""
    prefix, _ = decoder_layers(layout)
    params = [(full, p) for full, p in layout.params_under("") if p.shared_with is None]
    root = sum(p.numel for full, p in params if not full.startswith(f"{prefix}."))
    layer = sum(p.numel for full, p in params if full.startswith(f"{prefix}.0."))
    return (root + 2 * layer) * dtype_bytes


def fsdp_memory(plan: MemoryPlan, gpus: int, *, gathered: int, buffers: int = 0,
                gpu_memory: int | None = None) -> ShardedMemory:
    """Per-GPU memory of ``plan`` sharded over ``gpus`` ranks (see the module docstring)."""
    parts = {c.name: c.bytes for c in plan.components}
    sharded = sum(parts.get(name, 0) for name in SHARDED) - buffers
    per_gpu = -(-sharded // gpus)
    activations = parts.get("activations", 0) + max(parts.get(name, 0) for name in TRANSIENT)
    overhead = parts.get("framework overhead", 0)
    total = per_gpu + buffers + activations + gathered + overhead
    fits = None if gpu_memory is None else total <= FIT_FRACTION * gpu_memory
    return ShardedMemory(gpus, sharded, per_gpu, buffers, activations, gathered, overhead, total, gpu_memory, fits)
