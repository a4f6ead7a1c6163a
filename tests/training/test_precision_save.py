"""``save_rounded`` (fp32 master weights written in the recipe's 16-bit dtype) writes the tensors transformers'
own ``save_pretrained`` writes for the same model in that dtype: a tied ``lm_head`` (StarCoder2 3B/7B, the tiny
model) is not saved a second time."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from sc2tune.modeling import resolve_model_path
from sc2tune.training.precision import save_rounded


def test_rounded_save_has_the_tensors_of_transformers_own_save(tmp_path: Path) -> None:
    path = resolve_model_path("sc2tune/tiny-starcoder2")
    master = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    assert master.config.tie_word_embeddings
    save_rounded(master, tmp_path / "rounded", torch.bfloat16)
    AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).save_pretrained(tmp_path / "reference")
    rounded = load_file(str(tmp_path / "rounded" / "model.safetensors"))
    reference = load_file(str(tmp_path / "reference" / "model.safetensors"))
    assert sorted(rounded) == sorted(reference)
    for name, tensor in reference.items():
        assert rounded[name].dtype == torch.bfloat16
        assert torch.equal(rounded[name], tensor), name  # the fp32 base rounded once = transformers' bf16 load
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "rounded")
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
