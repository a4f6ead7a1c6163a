"""Reading a PEFT adapter folder (``sc2tune.merging.adapter``): PEFT's own scales, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from sc2tune.errors import UserError
from sc2tune.merging import merge
from sc2tune.merging.adapter import lora_scale

from .merge_helpers import LINEARS


def test_lora_scale_follows_peft_patterns(tied_base: Path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LINEARS, use_rslora=False,
                        rank_pattern={"c_fc": 8, r"layers\.1\.self_attn\.q_proj": 2},
                        alpha_pattern={"o_proj": 3.0})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tied_base), config)
    as_dict = config.to_dict()
    for name, module in model.base_model.model.named_modules():
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            assert lora_scale(as_dict, name) == (module.r["default"], pytest.approx(module.scaling["default"]))


def test_refuses_a_folder_that_is_not_an_adapter(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(UserError, match="not a PEFT adapter folder"):
        merge(tmp_path / "notes", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_an_adapter_with_nan_weights_is_refused_naming_the_tensor(base: Path, adapter: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in sorted(weights) if k.endswith("layers.1.mlp.c_fc.lora_B.weight"))
    weights[key] = weights[key].clone()
    weights[key][3, 1] = float("nan")
    save_file(weights, broken / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"'base_model\.model\.model\.layers\.1\.mlp\.c_fc\.lora_B\.weight' holds 1 NaN"):
        merge(broken, tmp_path / "out", base=str(base), progress=False)
    assert not (tmp_path / "out").exists()


def test_an_adapter_holding_an_undeclared_base_weight_is_refused_naming_it(base: Path, adapter: Path,
                                                                          tmp_path: Path):
    """A zeroed ``model.norm.weight`` in the file is no LoRA factor of a target, nor in modules_to_save: PEFT
    would load it over the base norm, and the merge's verification (against PEFT's loading) would agree."""
    smuggled = tmp_path / "smuggled"
    smuggled.mkdir()
    (smuggled / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    hidden = next(v for k, v in weights.items() if k.endswith("q_proj.lora_A.weight")).shape[1]
    weights["base_model.model.model.norm.weight"] = torch.zeros(hidden)
    save_file(weights, smuggled / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"does not declare.*'base_model\.model\.model\.norm\.weight'"):
        merge(smuggled, tmp_path / "out", base=str(base), progress=False)
    assert not (tmp_path / "out").exists()
