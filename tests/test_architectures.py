"""The module layouts (``sc2tune.architectures``) written down from config.json against transformers' own
meta-device models.

The reference is :func:`sc2tune.architectures.layout_of_model` on the model transformers builds from the same
config (names in ``named_modules()`` order, kinds, parameter shapes, tied tensors, buffers, the modules
quantisation skips, the head counts): the analytic layout must be equal to it field by field.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.architectures import analytic_layout, layout_of_model
from sc2tune.configs import load_config, meta_model, model_layout

CONFIGS = Path(__file__).parent.parent / "sc2tune" / "assets" / "configs"
SHIPPED = ["sc2tune/tiny-starcoder2", "bigcode/starcoder2-3b", "bigcode/starcoder2-7b", "bigcode/starcoder2-15b",
           "bigcode/starcoderbase-7b"]
#: Small configs, including the defaults a sparse config.json leaves to transformers.
SMALL = {
    "starcoder2-sparse": {"model_type": "starcoder2", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 96,
                          "num_hidden_layers": 2, "num_attention_heads": 4},
    "starcoder2-untied-nobias": {"model_type": "starcoder2", "vocab_size": 1000, "hidden_size": 64,
                                 "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 8,
                                 "num_key_value_heads": 8, "use_bias": False, "tie_word_embeddings": False,
                                 "residual_dropout": 0.1},
    "gpt_bigcode-mqa": {"model_type": "gpt_bigcode", "vocab_size": 1000, "n_positions": 128, "n_embd": 64,
                        "n_layer": 2, "n_head": 4, "n_inner": 256, "multi_query": True, "resid_pdrop": 0.0},
    "gpt_bigcode-mha": {"model_type": "gpt_bigcode", "vocab_size": 1000, "n_positions": 64, "n_embd": 32,
                        "n_layer": 3, "n_head": 2, "multi_query": False, "tie_word_embeddings": False},
}


def _meta_layout(name: str, head: str):
    return layout_of_model(meta_model(load_config(name), head=head, num_labels=3))


def _diff(a, b) -> str:
    if a is None:
        return "analytic layout is None"
    for field in a.__dataclass_fields__:
        x, y = getattr(a, field), getattr(b, field)
        if x != y:
            if field == "modules":
                pairs = [(p, q) for p, q in zip(x, y, strict=False) if p != q]
                return f"modules ({len(x)} vs {len(y)}): first difference {pairs[:1]}"
            return f"{field}: {x} vs {y}"
    return ""


@pytest.mark.parametrize("head", ["causal-lm", "sequence-classification"])
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_layouts_equal_the_meta_model(name: str, head: str) -> None:
    shipped = json.loads((CONFIGS / f"{name.rsplit('/', 1)[-1]}.json").read_text())  # the bundled config.json
    analytic = analytic_layout(shipped, head=head, num_labels=3)
    reference = _meta_layout(name, head)
    assert analytic == reference, _diff(analytic, reference)
    assert model_layout(name, head=head, num_labels=3) == reference


@pytest.mark.parametrize("head", ["causal-lm", "sequence-classification"])
@pytest.mark.parametrize("key", sorted(SMALL))
def test_small_layouts_equal_the_meta_model(key: str, head: str, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(SMALL[key]))
    analytic = analytic_layout(SMALL[key], head=head, num_labels=3)
    reference = _meta_layout(str(tmp_path), head)
    assert analytic == reference, _diff(analytic, reference)


def test_parameter_counts_match_the_meta_model() -> None:
    """The 15B's parameters and bytes, counted from the analytic layout, as torch counts the meta model."""
    model = meta_model(load_config("bigcode/starcoder2-15b"))
    layout = model_layout("bigcode/starcoder2-15b")
    unique = sum(p.numel for _, p in layout.params_under("") if p.shared_with is None)
    assert unique == sum(p.numel() for p in model.parameters())
    assert layout.buffer_bytes() == sum(b.numel() * b.element_size() for b in model.buffers())


def test_unknown_architecture_goes_through_the_meta_model(tmp_path: Path) -> None:
    config = {"model_type": "llama", "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert analytic_layout(config) is None
    layout = model_layout(str(tmp_path))
    assert layout.model_type == "llama" and layout.num_layers == 2
    assert {"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.down_proj"} <= set(layout.linears())
    assert any(m.kind == "rms-norm" for m in layout.modules)


def test_uncovered_configs_fall_back(tmp_path: Path) -> None:
    aliases = {"model_type": "gpt_bigcode", "vocab_size": 1000, "max_position_embeddings": 64, "hidden_size": 32,
               "num_hidden_layers": 3, "num_attention_heads": 2, "multi_query": False}
    assert analytic_layout(aliases) is None
    (tmp_path / "config.json").write_text(json.dumps(aliases))
    assert model_layout(str(tmp_path)) == _meta_layout(str(tmp_path), "causal-lm")
    base = dict(SMALL["starcoder2-sparse"])
    assert analytic_layout({**base, "hidden_size": "64"}) is None  # a wrong type: transformers decides
    assert analytic_layout({**base, "use_bias": 1}) is None and analytic_layout({**base, "hidden_size": True}) is None
    assert analytic_layout({**base, "auto_map": {"AutoModelForCausalLM": "m.M"}}) is None
    assert analytic_layout({**base, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}) is None
    assert analytic_layout({**SMALL["gpt_bigcode-mqa"], "add_cross_attention": True}) is None
