"""Matching an adapter to its base before anything is written (``sc2tune.merging.plan``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Starcoder2ForCausalLM

from sc2tune.errors import UserError
from sc2tune.merging import merge
from sc2tune.tiny import tiny_config

from .merge_helpers import make_adapter


def test_refuses_an_adapter_for_another_shape(tied_base: Path, tmp_path: Path):
    other = tiny_config()
    other.hidden_size, other.intermediate_size = 64, 256
    torch.manual_seed(0)
    Starcoder2ForCausalLM(other).save_pretrained(tmp_path / "other")
    adapter = make_adapter(tmp_path / "other", tmp_path / "adapter")
    with pytest.raises(UserError, match="shape"):
        merge(adapter, tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_an_adapter_for_another_architecture(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    renamed = {k.replace("self_attn.q_proj", "attn.c_attn"): v for k, v in weights.items()}
    from safetensors.torch import save_file

    save_file(renamed, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not have"):
        merge(adapter, tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()
