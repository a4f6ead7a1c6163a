"""The 4-bit round trip a QLoRA adapter was trained against (``sc2tune.merging.quant``): the NF4 codes by hand,
the weights bitsandbytes computes with in a 4-bit transformers model, and merged into it, the folder
reproduces PEFT's 4-bit adapter model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sc2tune.errors import UserError
from sc2tune.merging import merge
from sc2tune.merging.quant import nf4_round_trip
from sc2tune.recipe import QuantSpec

from .merge_helpers import (
    adapter_logits,
    make_adapter,
    merged_logits,
    peft_adapter,
    peft_logits,
    plain_logits,
    synthetic_base,
)

#: Random ids inside the synthetic bases' 512-token vocabulary.
IDS = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("classifier", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_qlora_merges_into_the_nf4_round_trip(classifier: bool, tied_base: Path, tmp_path: Path):
    recipe = {"adapter": {"method": "qlora", "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True}},
              "model": {"dtype": "float32", "head": "sequence-classification" if classifier else "causal-lm"},
              "task": "classify" if classifier else "fim", "data": {"train": "code/"}}
    adapter = make_adapter(tied_base, tmp_path / "adapter", classifier=classifier, recipe=recipe, quantized=True)
    result = merge(adapter, tmp_path / "nf4", base=str(tied_base), progress=False)
    assert result.round_trip == "nf4" and result.verification is not None and result.verification.passed
    trained, _ = adapter_logits(tied_base, adapter, classifier=classifier, quantized=True)
    got = merged_logits(tmp_path / "nf4", classifier=classifier)
    assert (got - trained).abs().max() < 1e-4

    merge(adapter, tmp_path / "orig", base=str(tied_base), merge_into="original", verify=False, progress=False)
    on_original, _ = adapter_logits(tied_base, adapter, classifier=classifier)
    got_orig = merged_logits(tmp_path / "orig", classifier=classifier)
    assert (got_orig - on_original).abs().max() < 1e-4
    # the round trip matters: merging into the original weights is further from what was trained
    assert (got_orig - trained).abs().max() > 10 * (got - trained).abs().max()


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


#: The 16 NF4 code values as published with QLoRA (Dettmers et al. 2023, appendix E), ascending.
NF4_CODES = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])


def test_round_trip_is_the_nearest_nf4_code_times_the_block_absmax() -> None:
    """Without double quant, by hand: blocks of 64 values, each value divided by its block's absolute maximum,
    replaced by the nearest NF4 code and multiplied back."""
    # 6 blocks of 64; rows a multiple of 64 long (bitsandbytes 0.50's CPU kernel dequantises other rows wrongly)
    weight = torch.randn(3, 128, generator=torch.Generator().manual_seed(0))
    blocks = weight.reshape(-1, 64)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    nearest = ((blocks / absmax).unsqueeze(-1) - NF4_CODES).abs().argmin(dim=-1)
    expected = (NF4_CODES[nearest] * absmax).reshape(weight.shape)
    got = nf4_round_trip(weight, QuantSpec(double_quant=False))
    assert got.shape == weight.shape and got.dtype == torch.float32
    assert torch.equal(got, expected)
    assert not torch.equal(got, weight)


def test_round_trip_is_the_weight_a_4bit_transformers_model_computes_with(untied_fp32_base: Path,
                                                                          nf4_model: torch.nn.Module):
    """NF4 with double quant, as QLoRA trains: every 4-bit Linear of the model transformers loads through
    bitsandbytes, dequantised by bitsandbytes, equals the round trip of the checkpoint's weight."""
    import bitsandbytes as bnb
    import bitsandbytes.functional as bnbf

    stored: dict[str, torch.Tensor] = {}
    for file in sorted(untied_fp32_base.glob("model*.safetensors")):
        stored.update(load_file(file))
    linears = {n: m for n, m in nf4_model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(linears) == 12  # q, k, v, o, c_fc, c_proj in each of the 2 layers
    for name, module in linears.items():
        trained_on = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state)
        assert torch.equal(nf4_round_trip(stored[f"{name}.weight"], QuantSpec()), trained_on), name


def test_round_trip_starts_from_the_dtype_training_loaded() -> None:
    """``dtype`` is the dtype the run loaded the base in: a float32 weight trained from bfloat16 is rounded to
    bfloat16 first (the blocks' maxima then are bfloat16 values)."""
    weight = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    as_loaded = weight.to(torch.bfloat16).float()
    absmax = as_loaded.abs().amax(dim=1, keepdim=True)
    got = nf4_round_trip(weight, QuantSpec(double_quant=False), "bfloat16")
    assert got.dtype == torch.bfloat16 and got.shape == weight.shape
    # each row is one block: its largest value is kept exactly (code 1.0 or -1.0 times the absmax)
    assert torch.equal(got.float().abs().amax(dim=1, keepdim=True), absmax)
    assert not torch.equal(absmax, weight.abs().amax(dim=1, keepdim=True))  # the bfloat16 maxima differ


def test_without_bitsandbytes_the_error_names_the_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bitsandbytes.functional", None)  # import fails as if not installed
    with pytest.raises(UserError, match="needs bitsandbytes") as err:
        nf4_round_trip(torch.ones(2, 64), QuantSpec())
    assert "--merge-into original" in str(err.value.hint)
