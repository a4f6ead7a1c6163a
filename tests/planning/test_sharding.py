"""Per-GPU memory under FSDP full sharding (``sc2tune.planning.sharding``) against hand computations."""

from __future__ import annotations

import torch

from sc2tune.architectures import layout_of_model
from sc2tune.configs import load_config, meta_model
from sc2tune.planning import plan_recipe
from sc2tune.planning.plan import GiB
from sc2tune.planning.sharding import fsdp_memory, gathered_bytes
from sc2tune.recipe import recipe_from_dict


def test_fsdp_per_gpu_memory_by_hand() -> None:
    """StarCoder-15.5B, full fine-tuning in bf16 + AdamW: 16 bytes per parameter, sharded over 8 GPUs."""
    recipe = recipe_from_dict({
        "model": {"name_or_path": "bigcode/starcoder"}, "task": "instruct", "adapter": {"method": "full"},
        "data": {"train": "x.jsonl", "max_length": 1024},
        "train": {"batch_size": 4, "gradient_checkpointing": True}, "output_dir": "runs/x"})
    plan = plan_recipe(recipe)
    h, f, layers, vocab, positions, kv = 6144, 24576, 40, 49152, 8192, 2 * 128
    layer = (2 * h) + (h * (h + kv) + h + kv) + (h * h + h) + (2 * h) + (h * f + f) + (f * h + h)
    root = vocab * h + positions * h + 2 * h  # wte (tied with lm_head), wpe, ln_f
    params = layers * layer + root
    model = meta_model(load_config("bigcode/starcoder"), dtype=torch.bfloat16)
    assert sum(p.numel() for p in model.parameters()) == params
    gathered = (root + 2 * layer) * 2
    assert gathered_bytes(layout_of_model(model), 2) == gathered
    parts = {c.name: c.bytes for c in plan.components}
    per_rank = parts["activations"] + max(parts["logits and loss"], parts["backward workspace"])
    mask = positions * positions  # GPTBigCode's causal mask buffer (bool): counted in the weights, not sharded
    assert layout_of_model(model).buffer_bytes() == mask
    expected = -(-16 * params // 8) + mask + per_rank + gathered + int(0.75 * GiB)
    got = fsdp_memory(plan, 8, gathered=gathered, buffers=mask, gpu_memory=80 * GiB)
    assert got.total == expected
    assert got.fits and expected < 40 * GiB < plan.total_bytes  # one GPU could never hold it; 8 shards can
