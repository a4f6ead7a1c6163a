"""Weight bytes per load mode (``sc2tune.planning.weights``) against independent references.

* transformers' own ``get_memory_footprint()`` of small random StarCoder2 / GPTBigCode models loaded in bf16,
  8-bit and 4-bit NF4 on CPU (bitsandbytes), and the quantisation constants bitsandbytes really allocates;
* the StarCoder2-15B figures published on its model card, and the published parameter counts;
* transformers' ``should_convert_module`` for the modules quantisation skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    GPTBigCodeForCausalLM,
    Starcoder2Config,
    Starcoder2ForCausalLM,
)
from transformers.quantizers.quantizers_utils import should_convert_module

from sc2tune.architectures import layout_of_model
from sc2tune.cli import main
from sc2tune.configs import load_config
from sc2tune.planning import weight_breakdown, weight_footprint
from sc2tune.planning.weights import _converted

from .plan_helpers import _small_configs


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plan-models")
    paths = {}
    for name, config in _small_configs().items():
        torch.manual_seed(0)
        cls = Starcoder2ForCausalLM if isinstance(config, Starcoder2Config) else GPTBigCodeForCausalLM
        cls(config).save_pretrained(root / name)
        paths[name] = root / name
    return paths


_LOADS = {
    "bf16": {"dtype": torch.bfloat16},
    "int8": {"dtype": torch.bfloat16, "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
             "device_map": {"": "cpu"}},
    "nf4": {"dtype": torch.bfloat16, "device_map": {"": "cpu"}, "quantization_config": BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.uint8)},
}


def _quant_state_bytes(model: torch.nn.Module) -> int:
    """Bytes of the quantisation constants bitsandbytes keeps beside the packed weights (deduplicated)."""
    tensors: dict[int, int] = {}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        state = getattr(weight, "quant_state", None)
        if state is not None:
            parts = [state.absmax, state.code]
            if state.nested:
                parts += [state.offset, state.state2.absmax, state.state2.code]
            for t in parts:
                tensors[t.untyped_storage().data_ptr()] = t.numel() * t.element_size()
        scb = getattr(weight, "SCB", None)
        if scb is not None:
            tensors[scb.untyped_storage().data_ptr()] = scb.numel() * scb.element_size()
    return sum(tensors.values())


@pytest.mark.parametrize("mode", ["bf16", "int8", "nf4"])
@pytest.mark.parametrize("name", list(_small_configs()))
def test_weights_match_get_memory_footprint(small_models: dict[str, Path], name: str, mode: str) -> None:
    loaded = AutoModelForCausalLM.from_pretrained(small_models[name], **_LOADS[mode])
    measured = loaded.get_memory_footprint()
    predicted = weight_footprint(str(small_models[name]))
    assert predicted["weights_bytes"][mode] == pytest.approx(measured, rel=0.02)
    # the quantisation constants (not seen by get_memory_footprint) as bitsandbytes allocates them
    constants = predicted["resident_bytes"][mode] - predicted["weights_bytes"][mode]
    assert constants == pytest.approx(_quant_state_bytes(loaded), rel=0.02, abs=64)
    if mode != "bf16":
        assert constants > 0
        # a real quantised load: the embeddings and the head stay 16-bit, the linears do not
        kinds = {type(m).__name__ for m in loaded.modules()}
        assert ("Linear8bitLt" if mode == "int8" else "Linear4bit") in kinds


def test_8bit_linear_runs_on_cpu(small_models: dict[str, Path]) -> None:
    """LLM.int8 loads *and* runs on CPU here, so the int8 figures above are a real measurement."""
    model = AutoModelForCausalLM.from_pretrained(small_models["starcoder2-linear"], **_LOADS["int8"])
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all()


def test_starcoder2_15b_matches_its_model_card() -> None:
    """The StarCoder2 model card reports get_memory_footprint() of the 15B: 32251.33 MB (bf16),
    16900.18 MB (8-bit), 9224.60 MB (4-bit), measured with transformers 4.38, whose rotary embedding kept
    a cos and a sin cache (16384 positions x head dim 128, in the 16-bit dtype) in each of the 40 layers.
    Current transformers keeps one small inv_freq buffer instead; add the old caches back to compare."""
    old_rotary_caches = 40 * 2 * 16384 * 128 * 2
    footprint = weight_footprint("bigcode/starcoder2-15b")["weights_bytes"]
    card = {"bf16": 32251.33e6, "int8": 16900.18e6, "nf4": 9224.60e6}
    for mode, published in card.items():
        assert footprint[mode] + old_rotary_caches == pytest.approx(published, abs=0.02e6), mode


def test_shipped_configs_have_the_published_sizes() -> None:
    sizes = {"bigcode/starcoder2-3b": 3.03e9, "bigcode/starcoder2-7b": 7.17e9, "bigcode/starcoder2-15b": 15.96e9,
             "bigcode/starcoder": 15.52e9, "bigcode/starcoderbase": 15.52e9}
    for name, params in sizes.items():
        assert weight_footprint(name)["params"] == pytest.approx(params, rel=0.01), name
    c3, c15 = load_config("bigcode/starcoder2-3b"), load_config("bigcode/starcoder2-15b")
    assert (c3.hidden_size, c3.num_hidden_layers, c3.num_key_value_heads, c3.tie_word_embeddings) == (3072, 30, 2, True)
    assert (c15.intermediate_size, c15.tie_word_embeddings, c15.bos_token_id, c15.eos_token_id) == (24576, False, 0, 0)


def test_nf4_constants_by_hand() -> None:
    """A 4096 x 4096 linear: 2^24 weights in 2^18 blocks; uint8 absmax per block, fp32 absmax per 256 blocks."""
    model = torch.nn.Sequential(torch.nn.Linear(4096, 4096, bias=False), torch.nn.Linear(4096, 8, bias=False))
    model.get_output_embeddings = lambda: model[1]  # type: ignore[attr-defined]
    w = weight_breakdown(layout_of_model(model), "nf4", skip_modules=["1"])
    blocks = 2**24 // 64
    assert w.quantized_bytes == 2**23
    assert w.quant_state_bytes == blocks + 4 * (blocks // 256) + 4 + 64 + 1024
    assert w.unquantized_bytes == 4096 * 8 * 2 and w.skipped_linears == ("1",)


def test_cli_model_json_last_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--model", "bigcode/starcoder2-3b", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    w = data["weights_bytes"]
    assert w["bf16"] == 2 * data["params"] + 2 * 4 * 64  # + rotary inv_freq buffers (fp32, head_dim/2 each)
    assert w["nf4"] < w["int8"] < w["bf16"]


@pytest.mark.parametrize("name", ["lm_head", "model.layers.1.mlp.c_fc", "model.layers.11.mlp", "score",
                                  "transformer.ln_f.bias", "model.norm"])
@pytest.mark.parametrize("keys", [["lm_head"], ["model.layers.1"], ["layers.*"], ["c_fc"], ["model.norm.bias"],
                                  ["score", "mlp.c"]])
def test_skip_rule_is_transformers(name: str, keys: list[str]) -> None:
    assert _converted(name, keys) == should_convert_module(name, keys)
