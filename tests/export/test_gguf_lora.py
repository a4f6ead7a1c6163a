"""GGUF-LoRA: the adapter alone for llama.cpp's ``--lora``, scaled as PEFT scales it.

References: the adapter's own safetensors and adapter_config.json (factors, r, alpha; the scale computed here by
hand: alpha / r, or alpha / sqrt(r) with rsLoRA), PEFT's forward of base + adapter (logits), and llama.cpp
loading the file on a base GGUF.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sc2tune.errors import UserError
from sc2tune.export.api import export_gguf, export_gguf_lora

from .conftest import make_lora, require_llama_cpp


@pytest.fixture(scope="module")
def rslora(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """rsLoRA (r 8, alpha 16: PEFT's scale 16 / sqrt(8), llama.cpp's converter would use 16 / 8)."""
    return make_lora(tiny_dir, tmp_path_factory.mktemp("rslora") / "adapter", r=8, lora_alpha=16,
                     use_rslora=True, std=0.1, seed=3)


@pytest.fixture(scope="module")
def rslora_gguf(rslora: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_gguf_lora(rslora, tmp_path_factory.mktemp("rslora-gguf") / "adapter.gguf")


def test_factors_carry_the_peft_scale_in_b_and_alpha_is_zero(rslora: Path, rslora_gguf: Path) -> None:
    config = json.loads((rslora / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / math.sqrt(config["r"])  # rsLoRA
    saved = load_file(str(rslora / "adapter_model.safetensors"))
    reader = gguf.GGUFReader(rslora_gguf)
    meta = {k: f.contents() for k, f in reader.fields.items()}
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["adapter.lora.alpha"] == 0.0 and meta["general.architecture"] == "starcoder2"
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert len(got) == 2 * 2 * 6  # A and B of 6 Linears in 2 layers
    a = saved["base_model.model.model.layers.1.mlp.c_fc.lora_A.weight"]
    b = saved["base_model.model.model.layers.1.mlp.c_fc.lora_B.weight"]
    np.testing.assert_array_equal(got["blk.1.ffn_up.weight.lora_a"].reshape(a.shape), a.numpy())
    np.testing.assert_allclose(got["blk.1.ffn_up.weight.lora_b"].reshape(b.shape), (b * scale).numpy(), rtol=1e-6)


def test_llama_cpp_applies_it_as_peft_does(tiny_dir: Path, rslora: Path, rslora_gguf: Path, tmp_path: Path,
                                           tokenizer) -> None:
    """Logits of base GGUF + --lora against PEFT's base + adapter, and against the base alone (which must be
    far off: the update is real)."""
    llama_cpp = require_llama_cpp()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_gguf = export_gguf(tiny_dir, tmp_path / "base.gguf", dtype="f32")
    ids = tokenizer("def mean(values):\n    return sum(values) / len(values)\n")["input_ids"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32),
                                      rslora).eval()
    with torch.no_grad():
        reference = model(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(str(base_gguf), lora_path=str(rslora_gguf), n_ctx=64, n_threads=1, logits_all=True,
                          verbose=False)
    plain = llama_cpp.Llama(str(base_gguf), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        plain.eval(ids)
        with_lora = np.array(llm.scores[: len(ids)])
        without = np.array(plain.scores[: len(ids)])
    finally:
        llm.close()
        plain.close()
    off = np.abs(without - reference).max()
    assert np.abs(with_lora - reference).max() < 0.02 < off / 5
    assert (with_lora.argmax(-1) == reference.argmax(-1)).mean() == 1.0


@pytest.mark.parametrize(("settings", "message"), [
    ({"use_dora": True}, "DoRA"),
    ({"modules_to_save": ["lm_head"]}, "saves whole modules"),
    ({"bias": "lora_only"}, "bias is 'lora_only'"),
])
def test_what_llama_cpp_cannot_apply_is_refused_with_export_merged(tiny_dir: Path, tmp_path: Path, settings: dict,
                                                                   message: str) -> None:
    adapter = make_lora(tiny_dir, tmp_path / "adapter", **settings)
    out = tmp_path / "adapter.gguf"
    with pytest.raises(UserError, match=message) as err:
        export_gguf_lora(adapter, out)
    assert "--format gguf" in str(err.value)
    assert not out.exists() and list(tmp_path.glob(".adapter.gguf*")) == []


def test_a_model_folder_has_no_adapter_to_export(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="holds no adapter"):
        export_gguf_lora(tiny_dir, tmp_path / "x.gguf")
