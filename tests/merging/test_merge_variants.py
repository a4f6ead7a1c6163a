"""rsLoRA, DoRA and rsLoRA+DoRA adapters made by PEFT, merged by sc2tune into bf16 shards with verification on:
each merged tensor is PEFT's float32 merge rounded once to bf16, within one bf16 step. QLoRA+DoRA merges into
the NF4 round trip and reproduces PEFT's 4-bit adapter model."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from merge_helpers import (
    bf16_step,
    peft_adapter,
    peft_logits,
    peft_merged_state,
    plain_logits,
    synthetic_base,
)
from safetensors.torch import load_file

from sc2tune.merging import merge
from sc2tune.merging.adapter import load_adapter

warnings.filterwarnings("ignore")

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


def test_qlora_dora_merges_into_the_nf4_round_trip(tmp_path: Path):
    base = synthetic_base(tmp_path / "base", dtype=torch.float32)
    adapter = peft_adapter(base, tmp_path / "adapter", quantized=True, use_dora=True)
    recipe = {"adapter": {"method": "qlora", "use_dora": True,
                          "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True}},
              "model": {"dtype": "float32"}, "task": "fim", "data": {"train": "code/"}}
    (adapter / "recipe.yaml").write_text(json.dumps(recipe))
    result = merge(adapter, tmp_path / "merged", base=str(base), progress=False)
    assert result.round_trip == "nf4" and result.verification is not None and result.verification.passed
    trained = peft_logits(base, adapter, IDS, quantized=True)
    got = plain_logits(tmp_path / "merged", IDS)
    assert (got - trained).abs().max() < 1e-4 * max(1.0, float(trained.abs().max()))
