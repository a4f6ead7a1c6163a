"""Full fine-tuning in bf16 keeps fp32 master weights, so updates smaller than one bf16 step accumulate.

References: the tiny base's own fp32 weights (what a step must move away from), the same run in float32 (the
direction of the update), and bf16 rounding of the master done here with ``Tensor.to``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from sc2tune.modeling import resolve_model_path
from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train

pytestmark = pytest.mark.slow

WEIGHT = "model.layers.0.mlp.c_fc.weight"
CODE = {f"m{i}.py": f"def f{i}(x):\n    return x * {i} + {i % 3}\n" for i in range(8)}


def _run(tmp_path: Path, dtype: str):
    code = tmp_path / "code"
    code.mkdir(exist_ok=True)
    for name, text in CODE.items():
        (code / name).write_text(text)
    recipe = recipe_from_dict({
        "task": "fim", "model": {"dtype": dtype}, "adapter": {"method": "full"},
        "data": {"train": str(code), "eval": None, "max_length": 64, "fim": {"rate": 0.0}},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 2e-5, "scheduler": "constant", "warmup_ratio": 0.0,
                  "weight_decay": 0.0, "shuffle": False, "save_steps": 1000, "gradient_checkpointing": False},
        "output_dir": str(tmp_path / f"run-{dtype}"),
    })
    return train(recipe, show_progress=False)


def test_bf16_full_fine_tuning_accumulates_small_updates(tmp_path: Path):
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("sc2tune/tiny-starcoder2"),
                                                dtype=torch.float32).state_dict()[WEIGHT]
    bf16 = _run(tmp_path, "bfloat16")
    master = dict(bf16.model.named_parameters())[WEIGHT].detach()
    # Adam moves each element by about lr per step, far below one bf16 step of these weights (|w| 2^-8):
    # updated in bf16 in place, only a third of the elements moved off the (bf16) base on this model
    assert float((master != base.to(master.dtype)).float().mean()) > 0.99
    assert master.dtype == torch.float32  # what the optimizer updated
    moved = master - base

    reference = dict(_run(tmp_path, "float32").model.named_parameters())[WEIGHT].detach() - base
    cosine = float(torch.nn.functional.cosine_similarity(moved.flatten(), reference.flatten(), dim=0))
    assert cosine > 0.9  # the update an fp32 run makes, up to bf16 compute

    saved = load_file(str(bf16.adapter_dir / "model.safetensors"))
    assert saved[WEIGHT].dtype == torch.bfloat16 and torch.equal(saved[WEIGHT], master.to(torch.bfloat16))
    assert json.loads((bf16.adapter_dir / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = AutoModelForCausalLM.from_pretrained(bf16.adapter_dir)
    assert reloaded.dtype == torch.bfloat16 and torch.equal(reloaded.state_dict()[WEIGHT], saved[WEIGHT])
