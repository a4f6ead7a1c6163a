"""The verification (``sc2tune.merging.verify``) never refuses an exact merge and still refuses a wrong one.

The exact case is issue 14's: an rsLoRA adapter (r 16, alpha 32, random A and B) on a 4-layer hidden-1024
StarCoder2 in bf16 shards. Its bf16 merge is PEFT's float32 merge rounded once, yet rounding alone moves the
logits past the old fixed bound (5e-2 * max |logit|), which called it a bug. A QLoRA adapter merged into the
original weights is measured against the model as trained; a base without a tokenizer is checked on
pseudo-random ids.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Starcoder2ForCausalLM

import sc2tune.merging.adapter as adapter_module
from sc2tune.errors import UserError
from sc2tune.merging import describe_merge, merge
from sc2tune.merging.adapter import load_adapter
from sc2tune.tiny import tiny_config

from .merge_helpers import (
    bf16_step,
    make_adapter,
    peft_adapter,
    peft_logits,
    peft_merged_state,
    plain_logits,
    synthetic_base,
)


def test_verification_without_any_tokenizer(tmp_path: Path):
    torch.manual_seed(1)
    Starcoder2ForCausalLM(tiny_config()).save_pretrained(tmp_path / "bare")  # weights and config only
    adapter = make_adapter(tmp_path / "bare", tmp_path / "adapter")
    result = merge(adapter, tmp_path / "merged", progress=False)  # base from adapter_config.json
    assert result.verification is not None and result.verification.passed
    assert result.verification.max_abs_diff < 1e-4


def test_qlora_merged_into_original_is_checked_against_the_model_as_trained(base: Path, tmp_path: Path):
    adapter = peft_adapter(base, tmp_path / "qlora", quantized=True)
    recipe = {"adapter": {"method": "qlora", "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True}},
              "model": {"dtype": "float32"}, "task": "fim", "data": {"train": "code/"}}
    (adapter / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
    result = merge(adapter, tmp_path / "orig", base=str(base), merge_into="original", progress=False)
    v = result.verification
    assert v is not None and v.passed and v.trained_diff is not None and v.trained_top1 is not None
    # the figure reported is the distance to the 4-bit base + adapter, computed here with PEFT directly
    ids = torch.randint(0, 512, (1, 24), generator=torch.Generator().manual_seed(0))
    trained = peft_logits(base, adapter, ids, quantized=True)
    got = plain_logits(tmp_path / "orig", ids)
    assert (got - trained).abs().max() > 1e-2  # merging into the original weights is not the trained model
    assert v.trained_diff > 1e-2 and v.trained_diff > 100 * v.reference_diff
    text = describe_merge(result)
    assert "as trained" in text and "what merging into the original weights costs" in text
    assert any("original (unquantised) weights" in n for n in result.notes)
    provenance = json.loads((tmp_path / "orig" / "sc2tune_merge.json").read_text())
    assert provenance["verification"]["trained_diff"] == pytest.approx(v.trained_diff)


@pytest.mark.slow
def test_exact_bf16_merge_that_the_old_bound_refused_passes(tmp_path: Path):
    base = synthetic_base(tmp_path / "base", hidden=1024, layers=4, vocab=2048, shard="50MB")
    adapter = peft_adapter(base, tmp_path / "adapter", r=16, lora_alpha=32, use_rslora=True, std=0.05)
    result = merge(adapter, tmp_path / "merged", base=str(base), dtype="bfloat16", shard_size="50MB",
                   progress=False)
    v = result.verification
    assert v is not None and v.passed and not v.tensors_off
    # the old check, max |merged - adapter model in bf16| <= 5e-2 * max(1, max |logit|), refused this merge
    assert v.max_abs_diff > 5e-2 * v.logit_scale
    assert v.rounding_effect == pytest.approx(v.max_abs_diff)  # all of it is the output rounding
    exact = peft_merged_state(base, adapter)
    merged: dict[str, torch.Tensor] = {}
    for file in (tmp_path / "merged").glob("model-*.safetensors"):
        merged.update(load_file(file))
    for name, tensor in merged.items():
        assert bool(((tensor.float() - exact[name]).abs() <= bf16_step(exact[name])).all()), name


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("small")
    base = synthetic_base(folder / "base")
    return base, peft_adapter(base, folder / "adapter", r=8, lora_alpha=16, use_rslora=True, std=0.05)


@pytest.mark.parametrize("mistake", ["plain-scale-for-rslora", "missed-module", "dora-transposed-update"])
def test_a_wrong_merge_is_refused(mistake: str, small: tuple[Path, Path], tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch):
    base, adapter = small
    if mistake == "dora-transposed-update":
        adapter = peft_adapter(base, tmp_path / "dora", use_dora=True, std=0.05)
    real = load_adapter

    def wrong(path, **options):  # noqa: ANN001, ANN003, ANN202
        parsed = real(path, **options)
        if mistake == "plain-scale-for-rslora":  # alpha / r instead of alpha / sqrt(r)
            parsed.lora = {m: dataclasses.replace(f, scale=16 / 8) for m, f in parsed.lora.items()}
        elif mistake == "missed-module":
            parsed.lora.pop("model.layers.1.self_attn.v_proj")
        else:  # DoRA update and norm laid out transposed (square q_proj only)
            q = "model.layers.0.self_attn.q_proj"
            parsed.lora[q] = dataclasses.replace(parsed.lora[q], fan_in_fan_out=True)
        return parsed

    monkeypatch.setattr(adapter_module, "load_adapter", wrong)  # merge imports it when it runs
    with pytest.raises(UserError, match="does not reproduce the adapter model") as err:
        merge(adapter, tmp_path / "merged", base=str(base), dtype="bfloat16", progress=False)
    assert "tensors within one step" in str(err.value)
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("lora", [
    {"target_modules": ["q_proj", "c_proj", "lm_head", "embed_tokens"]},
    {"target_modules": ["q_proj", "embed_tokens"], "ensure_weight_tying": True},
], ids=["untied-by-the-adapter", "ensure-weight-tying"])
def test_verification_of_adapted_tied_embeddings(lora: dict, small: tuple[Path, Path], tmp_path: Path):
    """PEFT's merge into a shared embedding tensor would add both updates to both uses; the reference unties
    them first, as the adapter model computes, so the correct (untied or still tied) merge passes."""
    base, _ = small
    adapter = peft_adapter(base, tmp_path / "adapter", **lora)
    result = merge(adapter, tmp_path / "merged", base=str(base), dtype="bfloat16", progress=False)
    assert result.verification is not None and result.verification.passed
    assert result.untied is ("ensure_weight_tying" not in lora)
