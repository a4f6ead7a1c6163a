"""Streaming merge of a LoRA adapter into the tiny GPTBigCode, against PEFT's own ``merge_and_unload``.

The adapter is made with PEFT on the fused ``attn.c_attn`` (q, k and the single shared k/v head in one
matrix), ``attn.c_proj``, ``mlp.c_fc`` and ``mlp.c_proj``, with random non-zero factors; the reference is PEFT's
in-memory merge of the same adapter. Only the public ``sc2tune.merge`` API is used.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, GPTBigCodeForCausalLM

from sc2tune.merging import merge
from sc2tune.tiny import load_bundled_tokenizer

from .conftest import tiny_gptbigcode_config

pytestmark = pytest.mark.slow

TARGETS = ["c_attn", "c_proj", "c_fc"]
IDS = torch.tensor([[1, 755, 3207, 26, 83, 731, 3, 1079, 2, 4650, 317, 2284, 0, 88]])


def _adapter(base: Path, out: Path, **lora: object) -> Path:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, task_type="CAUSAL_LM",
                                                  **lora))
    torch.manual_seed(5)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(out)
    return out


def _peft_merged(base: Path, adapter: Path) -> GPTBigCodeForCausalLM:
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    return model.merge_and_unload().eval()


@pytest.fixture(scope="module")
def untied_sharded_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPTBigCode with its own lm_head, saved in several shards."""
    folder = tmp_path_factory.mktemp("gptbigcode-untied")
    torch.manual_seed(13)
    GPTBigCodeForCausalLM(tiny_gptbigcode_config(tie_word_embeddings=False)).save_pretrained(
        folder, max_shard_size="5MB")
    load_bundled_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", ["tied", "untied-sharded", "rslora-head"])
def test_streaming_merge_equals_peft_merge_and_unload(case: str, gptbigcode_dir: Path, untied_sharded_base: Path,
                                                     tmp_path: Path) -> None:
    base = gptbigcode_dir if case == "tied" else untied_sharded_base
    lora = {"use_rslora": True, "modules_to_save": ["lm_head"]} if case == "rslora-head" else {}
    adapter = _adapter(base, tmp_path / "adapter", **lora)
    result = merge(adapter, tmp_path / "merged", base=str(base), shard_size="5MB", verify=True, progress=False)
    assert result.verification is not None and result.verification.passed

    expected = _peft_merged(base, adapter)
    got = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    assert type(got).__name__ == "GPTBigCodeForCausalLM"
    want, have = expected.state_dict(), got.state_dict()
    assert set(want) == set(have)
    for name, tensor in want.items():
        assert torch.allclose(have[name], tensor, atol=1e-6), name
    original = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).state_dict()
    fused = "transformer.h.0.attn.c_attn.weight"
    assert not torch.allclose(have[fused], original[fused], atol=1e-4), "the fused c_attn update is missing"
    with torch.no_grad():
        assert (got(input_ids=IDS).logits - expected(input_ids=IDS).logits).abs().max() < 1e-4
