"""The base checkpoint read lazily (``sc2tune.merging.checkpoint``): the tensors ``save_pretrained`` wrote, read
back one at a time; the model's layout by hand from StarCoder2's shapes; checkpoints it cannot stream."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import Starcoder2ForCausalLM

from sc2tune.errors import UserError
from sc2tune.merging.checkpoint import open_checkpoint, skeleton
from sc2tune.modeling import ModelSource
from sc2tune.tiny import tiny_config


def test_lists_and_reads_what_save_pretrained_wrote(tmp_path: Path) -> None:
    config = tiny_config()
    config.hidden_size, config.intermediate_size, config.vocab_size = 64, 256, 512
    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    weight_map = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    assert len(set(weight_map.values())) > 1  # really sharded

    ckpt = open_checkpoint(ModelSource(str(tmp_path)))
    state = model.state_dict()
    assert set(ckpt.tensors) == set(state) - {"lm_head.weight"}  # tied: saved once, as the embedding
    for name, info in ckpt.tensors.items():
        assert (info.shape, info.dtype, info.file.name) == (tuple(state[name].shape), torch.bfloat16, weight_map[name])
        assert torch.equal(ckpt.read(name), state[name]), name
    assert ckpt.dtype == torch.bfloat16 and ckpt.config.hidden_size == 64


def test_dtype_is_the_floating_dtype_holding_most_elements(tmp_path: Path) -> None:
    tiny_config().save_pretrained(tmp_path)
    save_file({"ids": torch.zeros(1000, dtype=torch.int64), "big": torch.ones(300, dtype=torch.float16),
               "small": torch.ones(200, dtype=torch.float32), "also_small": torch.ones(200, dtype=torch.float32)},
              tmp_path / "model.safetensors")
    ckpt = open_checkpoint(ModelSource(str(tmp_path)))
    assert ckpt.dtype == torch.float32  # 400 float32 elements against 300 float16; int64 is not a weight dtype
    assert {n: i.file.name for n, i in ckpt.tensors.items()} == dict.fromkeys(
        ["also_small", "big", "ids", "small"], "model.safetensors")
    assert ckpt.tensors["ids"].dtype == torch.int64


def _no_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _quantised_config(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": {"load_in_4bit": True}}))


def _missing_shard(folder: Path) -> None:
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _truncated(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:20])


def _bitsandbytes_tensors(folder: Path) -> None:
    save_file({"a.weight": torch.zeros(8, dtype=torch.uint8), "a.weight.absmax": torch.ones(1)},
              folder / "model.safetensors")


def _no_config(folder: Path) -> None:
    (folder / "config.json").unlink()


@pytest.mark.parametrize(("breakage", "message"), [
    (_no_weights, "has no model.safetensors or model.safetensors.index.json"),
    (_quantised_config, "is a quantised checkpoint"),
    (_missing_shard, "shard model-00002-of-00002.safetensors named in model.safetensors.index.json is missing"),
    (_truncated, "cannot read the safetensors header"),
    (_bitsandbytes_tensors, "holds bitsandbytes-quantised weights"),
    (_no_config, "cannot read the model's config.json"),
], ids=["no-weights", "quantised-config", "missing-shard", "truncated", "bitsandbytes-tensors", "no-config"])
def test_refuses_a_checkpoint_it_cannot_stream(breakage: Callable[[Path], None], message: str, tmp_path: Path) -> None:
    tiny_config().save_pretrained(tmp_path)
    save_file({"a": torch.ones(4), "b": torch.ones(2)}, tmp_path / "model.safetensors")
    breakage(tmp_path)
    with pytest.raises(UserError, match=message):
        open_checkpoint(ModelSource(str(tmp_path)))


def test_skeleton_of_the_tiny_starcoder2_by_hand() -> None:
    """Hidden 128, MLP 512, 2 layers, 4 query heads and 2 key/value heads of 32, vocabulary 49152, tied."""
    sk = skeleton(tiny_config(), classifier=False)
    linears = {f"model.layers.{i}.{m}" for i in range(2)
               for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.c_fc", "mlp.c_proj")}
    assert sk.linear_modules == linears | {"lm_head"}
    assert (sk.input_embedding, sk.output_embedding, sk.tied) == ("model.embed_tokens", "lm_head", True)
    assert "lm_head.weight" not in sk.params  # tied: written once, as the input embedding
    # per layer q, k, v, o, c_fc, c_proj (weight and bias) and two LayerNorms (weight and bias); the final norm
    assert len(sk.params) == 1 + 2 * (6 * 2 + 2 * 2) + 2
    shapes = {"model.embed_tokens.weight": (49152, 128), "model.layers.1.self_attn.q_proj.weight": (128, 128),
              "model.layers.1.self_attn.k_proj.weight": (64, 128), "model.layers.1.self_attn.v_proj.bias": (64,),
              "model.layers.0.mlp.c_fc.weight": (512, 128), "model.layers.0.mlp.c_proj.weight": (128, 512),
              "model.norm.bias": (128,)}
    assert {n: sk.params[n] for n in shapes} == shapes

    untied = tiny_config()
    untied.tie_word_embeddings = False
    sk = skeleton(untied, classifier=False)
    assert not sk.tied and sk.params["lm_head.weight"] == (49152, 128)

    sk = skeleton(tiny_config(num_labels=3), classifier=True)
    assert (sk.output_embedding, sk.tied, sk.params["score.weight"]) == (None, False, (3, 128))
    assert "lm_head.weight" not in sk.params
