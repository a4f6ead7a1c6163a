"""The 4-bit round trip a QLoRA adapter was trained against (``sc2tune.merging.quant``): merged into it, the
folder reproduces PEFT's 4-bit adapter model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sc2tune.merging import merge

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
