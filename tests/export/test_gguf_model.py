"""The GGUF model file: metadata, tokenizer and tensors against independent references.

References: the safetensors checkpoint itself (tensor values), PEFT's ``merge_and_unload`` (an adapter merged
on the fly), the transformers tokenizer and its tokenizer.json (vocabulary, merges, special ids by name), the
model's config.json (hyper-parameters), and llama.cpp's tensor names written out by hand. The file is read
back with gguf's own reader.
"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from sc2tune.export.api import export_gguf

#: llama.cpp's names of the tiny StarCoder2's tensors (llama.cpp src/llama-arch.cpp, LLM_ARCH_STARCODER2).
HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight", "model.norm.bias": "output_norm.bias",
    **{f"model.layers.{i}.{hf}.{p}": f"blk.{i}.{g}.{p}" for i in range(2) for p in ("weight", "bias")
       for hf, g in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm"),
                     ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                     ("self_attn.o_proj", "attn_output"), ("mlp.c_fc", "ffn_up"), ("mlp.c_proj", "ffn_down")]},
}


def fields(reader: gguf.GGUFReader) -> dict[str, object]:
    return {k: f.contents() for k, f in reader.fields.items()}


def tensors(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def tiny_f32(tiny_f32_gguf: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(tiny_f32_gguf)


def test_f32_tensors_are_the_checkpoint_under_llama_cpp_names(tiny_dir: Path, tiny_f32: gguf.GGUFReader) -> None:
    state = load_file(str(tiny_dir / "model.safetensors"))
    got = tensors(tiny_f32)
    assert set(got) == set(HF_TO_GGUF.values())  # tied: no output.weight, llama.cpp reuses token_embd
    for hf, name in HF_TO_GGUF.items():
        assert got[name].tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(got[name].data).reshape(state[hf].shape), state[hf].numpy())


def test_metadata_is_the_config_and_the_tokenizer(tiny_dir: Path, tiny_f32: gguf.GGUFReader, tokenizer) -> None:
    config = json.loads((tiny_dir / "config.json").read_text())
    meta = fields(tiny_f32)
    assert meta["general.architecture"] == "starcoder2"
    assert meta["starcoder2.block_count"] == config["num_hidden_layers"]
    assert meta["starcoder2.embedding_length"] == config["hidden_size"]
    assert meta["starcoder2.feed_forward_length"] == config["intermediate_size"]
    assert meta["starcoder2.attention.head_count"] == config["num_attention_heads"]
    assert meta["starcoder2.attention.head_count_kv"] == config["num_key_value_heads"]
    assert meta["starcoder2.context_length"] == config["max_position_embeddings"]
    assert meta["starcoder2.rope.freq_base"] == config["rope_parameters"]["rope_theta"] \
        if "rope_parameters" in config else config["rope_theta"]
    assert meta["starcoder2.attention.layer_norm_epsilon"] == pytest.approx(config["norm_epsilon"])
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "starcoder"
    tokens = meta["tokenizer.ggml.tokens"]
    assert len(tokens) == config["vocab_size"]
    assert tokens == tokenizer.convert_ids_to_tokens(list(range(config["vocab_size"])))
    raw = json.loads((tiny_dir / "tokenizer.json").read_text())["model"]["merges"]
    assert meta["tokenizer.ggml.merges"] == [" ".join(m) if isinstance(m, list) else m for m in raw]
    types = meta["tokenizer.ggml.token_type"]
    special = set(tokenizer.all_special_ids)
    assert {i for i, t in enumerate(types) if t == gguf.TokenType.CONTROL} == special
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in
           ("<|endoftext|>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<fim_pad>", "<repo_name>", "<file_sep>")}
    expected = {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "eot": "<|endoftext|>", "padding": "<fim_pad>",
                "fim_pre": "<fim_prefix>", "fim_suf": "<fim_suffix>", "fim_mid": "<fim_middle>",
                "fim_pad": "<fim_pad>", "fim_rep": "<repo_name>", "fim_sep": "<file_sep>"}
    for key, token in expected.items():
        assert meta[f"tokenizer.ggml.{key}_token_id"] == ids[token], key
    assert meta["tokenizer.ggml.add_bos_token"] is False
    assert "tokenizer.chat_template" not in meta  # a base model has no instruction template


def test_adapter_is_merged_on_the_fly_as_peft_merges_it(tiny_dir: Path, tiny_lora: Path, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reader = gguf.GGUFReader(export_gguf(tiny_lora, tmp_path / "lora-merged.gguf", dtype="f32"))
    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, tiny_lora).merge_and_unload().state_dict()
    got = tensors(reader)
    changed = 0
    for hf, name in HF_TO_GGUF.items():
        value = np.asarray(got[name].data).reshape(merged[hf].shape)
        np.testing.assert_allclose(value, merged[hf].numpy(), rtol=0, atol=2e-6)
        changed += not np.array_equal(value, load_file(str(tiny_dir / "model.safetensors"))[hf].numpy())
    assert changed == 2 * 6  # every LoRA target of both layers carries its update


def test_f16_rounds_weights_once_and_keeps_norms_and_biases_f32(tiny_dir: Path, tmp_path: Path) -> None:
    reader = gguf.GGUFReader(export_gguf(tiny_dir, tmp_path / "tiny-f16.gguf", dtype="f16"))
    state = load_file(str(tiny_dir / "model.safetensors"))
    assert fields(reader)["general.file_type"] == gguf.LlamaFileType.MOSTLY_F16
    for hf, name in HF_TO_GGUF.items():
        t = tensors(reader)[name]
        two_d = state[hf].ndim == 2
        assert t.tensor_type == (gguf.GGMLQuantizationType.F16 if two_d else gguf.GGMLQuantizationType.F32), name
        expected = state[hf].half().numpy() if two_d else state[hf].numpy()
        np.testing.assert_array_equal(np.asarray(t.data).reshape(state[hf].shape), expected)


def test_q8_0_blocks_dequantise_within_half_a_step(tiny_dir: Path, tmp_path: Path) -> None:
    """Q8_0: blocks of 32 values, one f16 scale d = max|x| / 127 each, q = round(x / d): every value within
    d / 2 of the original, plus |q| <= 127 times the f16 rounding of d (relative 2^-11), bounded by hand from
    the block maxima."""
    reader = gguf.GGUFReader(export_gguf(tiny_dir, tmp_path / "tiny-q8.gguf", dtype="q8_0"))
    state = load_file(str(tiny_dir / "model.safetensors"))
    t = tensors(reader)["blk.0.ffn_up.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    original = state["model.layers.0.mlp.c_fc.weight"].numpy()
    values = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(original.shape)
    blocks = original.reshape(-1, 32)
    step = np.abs(blocks).max(axis=1, keepdims=True) / 127
    assert (np.abs(values.reshape(-1, 32) - blocks) <= step * (0.5 + 127 * 2.0**-11) + 1e-9).all()


def test_q4_k_m_is_llama_cpps_own_quantisation(tiny_dir: Path, tmp_path: Path) -> None:
    """llama.cpp's quantiser picks the types (K-quants where the 256-value super-blocks fit the rows, else a
    fallback); the F32 file it starts from is gone afterwards."""
    from .conftest import require_llama_cpp

    require_llama_cpp()
    out = export_gguf(tiny_dir, tmp_path / "tiny-q4km.gguf", dtype="q4_k_m")
    reader = gguf.GGUFReader(out)
    assert fields(reader)["general.file_type"] == gguf.LlamaFileType.MOSTLY_Q4_K_M
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] in (gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K)
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-q4km.gguf"]
