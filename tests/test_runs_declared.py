"""An adapter file may hold only the tensors its config declares (``sc2tune.runs.declared``).

The reference for "declared" is PEFT itself: whatever ``save_pretrained`` writes for a config must pass, and a
base weight added to the file must be refused by name, before PEFT would load it over the base.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from sc2tune.errors import UserError
from sc2tune.modeling import resolve_model_path
from sc2tune.runs import load_trained, undeclared
from sc2tune.runs.declared import safetensors_names

TINY = Path(resolve_model_path("sc2tune/tiny-starcoder2"))
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]


def _save(out: Path, classifier: bool = False, **lora: object) -> Path:
    cls = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    extra = {"num_labels": 3, "pad_token_id": 4} if classifier else {}
    model = cls.from_pretrained(TINY, **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        get_peft_model(model, LoraConfig(r=2, lora_alpha=4, **lora)).save_pretrained(out)
    return out


def _names(folder: Path) -> list[str]:
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
        return list(handle.keys())  # noqa: SIM118 - safe_open handles are not iterable


def _config(folder: Path) -> dict:
    return json.loads((folder / "adapter_config.json").read_text())


@pytest.mark.parametrize("lora", [
    {"target_modules": LINEARS},
    {"target_modules": LINEARS, "bias": "all"},
    {"target_modules": ["q_proj", "c_fc"], "bias": "lora_only"},
    {"target_modules": LINEARS, "use_dora": True},
    {"target_modules": ["q_proj", "embed_tokens"]},
    {"target_modules": ["q_proj", "embed_tokens"], "ensure_weight_tying": True},
    {"target_modules": r".*\.self_attn\.(q|v)_proj", "modules_to_save": ["norm"]},
    {"target_modules": ["c_fc"], "layers_to_transform": [1], "rank_pattern": {"c_fc": 4}},
    {"target_modules": ["q_proj"], "task_type": "SEQ_CLS", "classifier": True},
], ids=["linears", "bias-all", "bias-lora-only", "dora", "embedding", "tied-embedding", "regex+modules_to_save", "layers",
        "classifier"])
def test_everything_peft_saves_is_declared(tmp_path: Path, lora: dict):
    classifier = bool(lora.pop("classifier", False))
    folder = _save(tmp_path / "a", classifier, **lora)
    names = _names(folder)
    assert safetensors_names(folder / "adapter_model.safetensors") == names  # the header, as safetensors reads it
    assert undeclared(_config(folder), names) == []


def _tamper(folder: Path, out: Path, extra: dict[str, torch.Tensor]) -> Path:
    out.mkdir()
    (out / "adapter_config.json").write_text((folder / "adapter_config.json").read_text())
    save_file({**load_file(folder / "adapter_model.safetensors"), **extra}, out / "adapter_model.safetensors")
    return out


def test_base_weights_and_untargeted_factors_are_undeclared(tmp_path: Path):
    folder = _save(tmp_path / "a", target_modules=["q_proj"])
    config = _config(folder)
    p = "base_model.model."
    smuggled = [f"{p}model.norm.weight", f"{p}model.embed_tokens.weight", f"{p}lm_head.weight",
                f"{p}model.layers.0.mlp.c_fc.lora_A.weight",  # c_fc is not a target
                f"{p}model.layers.0.self_attn.q_proj.base_layer.weight",  # q_proj's own base weight
                f"{p}model.layers.0.self_attn.q_proj.lora_magnitude_vector",  # no use_dora
                f"{p}model.layers.0.self_attn.q_proj.base_layer.bias"]  # bias: none
    assert undeclared(config, [*_names(folder), *smuggled]) == smuggled


def test_loading_refuses_a_zeroed_norm_naming_it(tmp_path: Path):
    folder = _save(tmp_path / "a", target_modules=["q_proj"])
    zeroed = torch.zeros_like(AutoModelForCausalLM.from_pretrained(TINY).model.norm.weight)
    bad = _tamper(folder, tmp_path / "bad", {"base_model.model.model.norm.weight": zeroed})
    with pytest.raises(UserError, match=r"'base_model\.model\.model\.norm\.weight'"):
        load_trained(bad, "adapter", dtype="float32", device="cpu")  # unchecked, PEFT loads the zeros over the norm
