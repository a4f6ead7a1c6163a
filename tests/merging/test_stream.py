"""The streaming pass (``sc2tune.merging.stream``): each merged tensor is the float32 LoRA / rsLoRA / DoRA
update rounded once to the output dtype, checked tensor by tensor against PEFT's float32 ``merge_and_unload``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from sc2tune.merging import merge
from sc2tune.merging.adapter import load_adapter

from .merge_helpers import (
    bf16_step,
    make_adapter,
    peft_adapter,
    peft_logits,
    peft_merged_state,
    plain_logits,
    synthetic_base,
)

#: Random ids inside the synthetic bases' 512-token vocabulary.
IDS = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def bf16_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_base(tmp_path_factory.mktemp("b") / "base")


@pytest.fixture(scope="module")
def untied_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_base(tmp_path_factory.mktemp("u") / "base", tied=False)


def _merged_tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("model-*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def test_bf16_output_is_the_fp32_merge_rounded_once(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    merge(adapter, tmp_path / "merged", base=str(tied_base), dtype="bfloat16", verify=True, progress=False)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tied_base), adapter)
    exact = reference.merge_and_unload().state_dict()  # PEFT's merge in float32
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    for name, tensor in merged.items():
        ref = exact[name]
        # one rounding: within half a bfloat16 step (2^-8 relative) of the exact value, plus fp32 noise
        bound = ref.abs() * 2.0**-8 + 1e-6
        assert ((tensor.float() - ref).abs() <= bound).all(), name
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    provenance = json.loads((tmp_path / "merged" / "sc2tune_merge.json").read_text())
    assert provenance["verification"]["passed"]


@pytest.mark.parametrize("variant", ["rslora", "dora", "rslora-dora", "dora-embedding"])
def test_variant_merge_is_peft_fp32_merge_rounded_once(variant: str, bf16_base: Path, untied_base: Path,
                                                       tmp_path: Path):
    base = untied_base if variant == "dora-embedding" else bf16_base
    lora: dict = {"rslora": {"use_rslora": True, "r": 8, "lora_alpha": 16},
                  "dora": {"use_dora": True},
                  "rslora-dora": {"use_rslora": True, "use_dora": True, "r": 8, "lora_alpha": 16,
                                  "rank_pattern": {"c_fc": 4}},
                  "dora-embedding": {"use_dora": True, "target_modules": ["q_proj", "c_proj", "embed_tokens"]},
                  }[variant]
    adapter = peft_adapter(base, tmp_path / "adapter", **lora)
    assert (load_adapter(adapter).lora["model.layers.0.self_attn.q_proj"].magnitude is not None) is ("dora" in variant)
    result = merge(adapter, tmp_path / "merged", base=str(base), dtype="bfloat16", shard_size="100KB",
                   progress=False)
    assert result.verification is not None and result.verification.passed
    assert result.stats.shards > 1
    exact = peft_merged_state(base, adapter)
    merged = _merged_tensors(tmp_path / "merged")
    assert merged.keys() <= exact.keys() and len(merged) >= len(exact) - 1  # tied lm_head written once
    for name, tensor in merged.items():
        assert tensor.dtype == torch.bfloat16, name
        ref = exact[name]
        within = (tensor.float() - ref).abs() <= bf16_step(ref)
        assert bool(within.all()), f"{name}: {int((~within).sum())} values off by more than one bf16 step"
    # the update is really in, and plain transformers serves it
    got = plain_logits(tmp_path / "merged", IDS)
    expected = peft_logits(base, adapter, IDS)
    assert (got - expected).abs().max() < (got - plain_logits(base, IDS)).abs().max()
    provenance = json.loads((tmp_path / "merged" / "sc2tune_merge.json").read_text())
    assert provenance["verification"]["reference_diff"] <= provenance["verification"]["tolerance"]
