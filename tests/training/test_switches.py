"""The recipe's benchmark switches (train.loss_impl, train.packed_attention, train.lora_dropout_impl) change
what runs: observed on the modules a short training run actually calls, never on the flags themselves."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch import nn

from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train
from sc2tune.training.attention import NAME
from sc2tune.training.dropout import SparseDropout

pytestmark = pytest.mark.slow

CODE = "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n\n\ndef square(x):\n    return x * x\n"


def _observed_run(tmp_path, **switches: str) -> Counter:
    """Two optimizer steps of packed FIM training; counts what the forward passes went through."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text(CODE * 4)
    recipe = recipe_from_dict({
        "task": "fim", "adapter": {"r": 4, "dropout": 0.2},
        "data": {"train": str(tmp_path / "code"), "eval": None, "max_length": 64, "packing": True,
                 "cache_dir": None},
        "train": {"max_steps": 2, "batch_size": 2, "save_steps": 1000, **switches},
        "output_dir": str(tmp_path / "run"),
    })
    seen: Counter = Counter()

    def hook(module: nn.Module, args: tuple, output: object) -> None:
        if isinstance(module, nn.Linear) and module.out_features == 49152 and args[0].dim() == 3:
            seen["lm_head over all positions" if args[0].shape[1] > 1 else "lm_head over one position"] += 1
        if type(module).__name__ == "Starcoder2Attention":
            seen[f"attention {module.config._attn_implementation}"] += 1
        if isinstance(module, nn.Dropout) and module.training and module.p == 0.2:
            seen[type(module).__name__] += 1

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        train(recipe, show_progress=False)
    finally:
        handle.remove()
    return seen


def test_defaults_take_the_chunked_loss_per_document_attention_and_sparse_dropout(tmp_path):
    seen = _observed_run(tmp_path)
    assert seen["lm_head over one position"] > 0 and seen["lm_head over all positions"] == 0
    assert seen[f"attention {NAME}"] > 0 and seen["attention sdpa"] == 0
    assert seen[SparseDropout.__name__] > 0 and seen["Dropout"] == 0


def test_switches_take_the_plain_loss_dense_attention_and_peft_dropout(tmp_path):
    seen = _observed_run(tmp_path, loss_impl="plain", packed_attention="dense", lora_dropout_impl="peft")
    assert seen["lm_head over all positions"] > 0 and seen["lm_head over one position"] == 0
    assert seen["attention sdpa"] > 0 and seen[f"attention {NAME}"] == 0
    assert seen["Dropout"] > 0 and seen[SparseDropout.__name__] == 0
