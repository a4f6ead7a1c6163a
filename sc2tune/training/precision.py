"""Full fine-tuning in 16 bits: fp32 master weights, 16-bit compute (standard automatic mixed precision).

Updating 16-bit weights in place loses every update smaller than half a step of the format: bf16 keeps 8
significant bits, so ``w + d`` rounds back to ``w`` whenever ``|d| < |w| 2^-9``; at lr 2e-5 most of a weight
matrix never moves, however many steps add up. So a run with ``adapter.method: full`` and a 16-bit
``model.dtype`` (bfloat16, float16, or ``auto`` on a bf16 GPU):

* loads every weight in **fp32** (the master copy the optimizer updates; gradients and AdamW moments are
  fp32 as well), and computes in the recipe's dtype under autocast (transformers' ``bf16``/``fp16`` training
  arguments: accelerate's autocast, with a gradient scaler for fp16; bf16 autocast on CPU too, fp16 on CPU
  computes in fp32 since CPUs have no fp16 autocast);
* keeps the fp32 master in its checkpoints, so ``--resume`` goes on accumulating exactly;
* writes ``model/`` in the recipe's dtype: each weight rounded once, to nearest, from its fp32 master (the
  size a user expects of a bf16 model; :func:`save_rounded`).

Memory per parameter: 4 (master) + 4 (gradient) + 8 (two AdamW moments) = 16 bytes, what
:mod:`sc2tune.planning.plan` counts; autocast's 16-bit copies of the weights (2 bytes) live through the forward
and are freed during the backward as the gradients arrive, so they do not add to the peak.

Under FSDP and DeepSpeed the model is loaded as the recipe says: accelerate upcasts FSDP's sharded parameters
to fp32 itself when mixed precision is on, and DeepSpeed's bf16/fp16 optimizers keep fp32 master copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sc2tune.modeling import ModelSource, resolve_dtype
from sc2tune.recipe import Recipe


def keeps_fp32_master(recipe: Recipe) -> bool:
    """True for a full fine-tune in a 16-bit dtype outside FSDP and DeepSpeed: load fp32, compute 16-bit
    (module doc). The engine is the launcher's (the model is loaded before accelerate's state exists)."""
    from sc2tune.training.distributed import requested_engine

    return (recipe.adapter.method == "full" and resolve_dtype(recipe.model.dtype) != torch.float32
            and requested_engine() is None)


def training_source(recipe: Recipe) -> ModelSource:
    """The base as training loads it (:meth:`ModelSource.from_recipe`): fp32 weights for
    :func:`keeps_fp32_master` runs, else the recipe's dtype."""
    source = ModelSource.from_recipe(recipe)
    return source.replace(dtype="float32") if keeps_fp32_master(recipe) else source


def save_rounded(model: torch.nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """``model.save_pretrained(folder)`` with every floating-point tensor rounded to ``dtype`` (to nearest)
    and ``config.json`` naming ``dtype``; the live model keeps its fp32 weights.

    Tensors that share storage (a tied ``lm_head`` and ``embed_tokens``) share one rounded copy, so
    ``save_pretrained`` still sees them as tied and writes the embedding once, as it does for the model itself."""
    rounded: dict[tuple, torch.Tensor] = {}
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            key = (tensor.device, tensor.untyped_storage().data_ptr(), tensor.storage_offset(),
                   tuple(tensor.shape), tensor.stride())
            tensor = rounded.setdefault(key, tensor.to(dtype))
        state[name] = tensor
    saved_dtype = model.config.dtype
    try:
        model.save_pretrained(str(folder), state_dict=state)
    finally:
        model.config.dtype = saved_dtype
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
