"""Matching an adapter to its base before anything is written (``sc2tune.merging.plan``): through ``merge``,
and directly against the checkpoint as safetensors lists it and the Linear layers bitsandbytes quantises."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Starcoder2ForCausalLM

from sc2tune.errors import UserError
from sc2tune.merging import merge
from sc2tune.merging.adapter import Adapter, LoraFactors
from sc2tune.merging.checkpoint import open_checkpoint
from sc2tune.merging.plan import build_plan
from sc2tune.modeling import ModelSource
from sc2tune.recipe import QuantSpec
from sc2tune.tiny import tiny_config

from .merge_helpers import make_adapter


def test_refuses_an_adapter_for_another_shape(tied_base: Path, tmp_path: Path):
    other = tiny_config()
    other.hidden_size, other.intermediate_size = 64, 256
    torch.manual_seed(0)
    Starcoder2ForCausalLM(other).save_pretrained(tmp_path / "other")
    adapter = make_adapter(tmp_path / "other", tmp_path / "adapter")
    with pytest.raises(UserError, match="shape"):
        merge(adapter, tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_an_adapter_for_another_architecture(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    renamed = {k.replace("self_attn.q_proj", "attn.c_attn"): v for k, v in weights.items()}
    from safetensors.torch import save_file

    save_file(renamed, adapter / "adapter_model.safetensors")
    # the config declares the renamed module too (else the declared-tensor check refuses it first)
    targets = config["target_modules"]
    config["target_modules"] = [*(targets if isinstance(targets, list) else [targets]), "c_attn"]
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not have"):
        merge(adapter, tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


def _adapter(lora: dict[str, tuple[int, int]] | None = None, full: dict[str, torch.Tensor] | None = None,
             config: dict | None = None) -> Adapter:
    """An adapter by hand: rank-4 factors for each ``module: (out, in)``, full replacement tensors."""
    g = torch.Generator().manual_seed(0)
    factors = {m: LoraFactors(m, torch.randn(4, i, generator=g), torch.randn(o, 4, generator=g), 2.0, False)
               for m, (o, i) in (lora or {}).items()}
    return Adapter(Path("adapter"), config or {}, factors, full or {})


def test_each_weight_is_planned_once_with_its_own_update(base: Path):
    adapter = _adapter({"model.layers.0.self_attn.k_proj": (32, 64), "model.layers.1.mlp.c_fc": (256, 64)})
    plan = build_plan(adapter, open_checkpoint(ModelSource(str(base))), dtype=torch.bfloat16, quant=None)
    stored = {}  # the checkpoint as safetensors reads it
    for file in base.glob("model*.safetensors"):
        stored.update({k: tuple(t.shape) for k, t in load_file(file).items()})
    assert sorted(s.out.name for s in plan.sources) == sorted(stored)  # tied: no lm_head.weight of its own
    assert all(s.base_key == s.out.name and s.out.shape == stored[s.out.name] for s in plan.sources)
    updated = {s.out.name: s.lora.module for s in plan.sources if s.lora is not None}
    assert updated == {"model.layers.0.self_attn.k_proj.weight": "model.layers.0.self_attn.k_proj",
                       "model.layers.1.mlp.c_fc.weight": "model.layers.1.mlp.c_fc"}
    assert all(s.out.dtype == torch.bfloat16 and not s.round_trip and s.replace is None for s in plan.sources)
    assert not plan.untied and plan.config.tie_word_embeddings and plan.config.dtype == torch.bfloat16


def test_qlora_round_trips_exactly_the_linears_bitsandbytes_quantised(untied_fp32_base: Path,
                                                                    nf4_model: torch.nn.Module):
    import bitsandbytes as bnb

    quantised = {f"{n}.weight" for n, m in nf4_model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    plan = build_plan(_adapter({"model.layers.0.self_attn.q_proj": (64, 64)}), open_checkpoint(ModelSource(str(untied_fp32_base))),
                      dtype=torch.float32, quant=QuantSpec())
    assert {s.out.name for s in plan.sources if s.round_trip} == quantised
    assert len(quantised) == 12 and "lm_head.weight" in {s.out.name for s in plan.sources}  # written, not rounded
    assert any("round trip" in note for note in plan.notes)


def test_an_adapter_that_changes_the_tied_embedding_unties_the_output(base: Path):
    """The adapter model computes with its own embedding and the base's output layer: two matrices, both written."""
    changed = torch.zeros(512, 64)
    plan = build_plan(_adapter(full={"model.embed_tokens.weight": changed}), open_checkpoint(ModelSource(str(base))),
                      dtype=torch.float32, quant=None)
    sources = {s.out.name: s for s in plan.sources}
    assert plan.untied and plan.config.tie_word_embeddings is False and any("untied" in n for n in plan.notes)
    assert sources["model.embed_tokens.weight"].replace == "model.embed_tokens.weight"
    head = sources["lm_head.weight"]
    assert (head.base_key, head.replace, head.out.shape) == ("model.embed_tokens.weight", None, (512, 64))


@pytest.mark.parametrize(("adapter", "message"), [
    (_adapter({"model.layers.0.mlp.gate_proj": (256, 64)}), "adapts 'model.layers.0.mlp.gate_proj', which the base"),
    (_adapter(full={"model.layers.0.mlp.up_proj.weight": torch.zeros(256, 64)}), "matches no weight"),
    (_adapter(full={"model.embed_tokens.weight": torch.zeros(600, 64)}), "a resized vocabulary"),
    (_adapter({"model.layers.0.self_attn.q_proj": (64, 64)}, config={"task_type": "SEQ_CLS"}),
     "without its 'score' head"),
], ids=["unknown-module", "unknown-saved-tensor", "resized-vocabulary", "classifier-without-head"])
def test_refuses_an_adapter_that_does_not_fit_the_base(adapter: Adapter, message: str, base: Path):
    with pytest.raises(UserError, match=message):
        build_plan(adapter, open_checkpoint(ModelSource(str(base))), dtype=torch.float32, quant=None)
