"""StarCoder2's module tree written down from its config.json (transformers' ``Starcoder2`` modeling code).

StarCoder2 (``h`` hidden, ``n_h`` heads, ``n_kv`` key/value heads, ``d = h / n_h``, ``f`` MLP width,
``b`` = ``use_bias``), per layer ``model.layers.i``::

    self_attn.q_proj  Linear h -> n_h d (+b)      self_attn.k_proj / v_proj  Linear h -> n_kv d (+b)
    self_attn.o_proj  Linear n_h d -> h (+b)      mlp.c_fc  Linear h -> f (+b)   mlp.c_proj  Linear f -> h (+b)
    mlp.act, input_layernorm / post_attention_layernorm  LayerNorm h (weight, bias)

around them ``model.embed_tokens`` (V x h), ``model.norm`` (LayerNorm h), ``model.rotary_emb`` (buffers
``inv_freq`` and ``original_inv_freq``: ``ceil(d/2)`` fp32 each) and ``lm_head`` (h -> V, no bias; the same
tensor as the embeddings when ``tie_word_embeddings``) or ``score`` (h -> num_labels, no bias).
"""

from __future__ import annotations

from typing import Any

from sc2tune.architectures.layout import ModelLayout, ModuleEntry, Param
from sc2tune.architectures.transcription import (
    _BOOL,
    _FLOAT,
    _INT,
    _STR,
    _default_skip,
    _head,
    _layer_norm,
    _linear,
    _values,
)

_STARCODER2: dict[str, tuple[Any, tuple[type, ...], bool]] = {  # name: (default, types, may be None)
    "vocab_size": (49152, _INT, False), "hidden_size": (3072, _INT, False),
    "intermediate_size": (12288, _INT, False), "num_hidden_layers": (30, _INT, False),
    "num_attention_heads": (24, _INT, False), "num_key_value_heads": (2, _INT, False),
    "hidden_act": ("gelu_pytorch_tanh", _STR, False), "max_position_embeddings": (4096, _INT, False),
    "initializer_range": (0.018042, _FLOAT, False), "norm_epsilon": (1e-5, _FLOAT, False),
    "use_cache": (True, _BOOL, False), "bos_token_id": (50256, _INT, True), "eos_token_id": (50256, _INT, True),
    "pad_token_id": (None, _INT, True), "sliding_window": (None, _INT, True),
    "attention_dropout": (0.0, _FLOAT, False), "residual_dropout": (0.0, _FLOAT, False),
    "embedding_dropout": (0.0, _FLOAT, False), "use_bias": (True, _BOOL, False),
    "tie_word_embeddings": (True, _BOOL, False), "head_dim": (None, _INT, True),
}


def _starcoder2(data: dict[str, Any], head: str, num_labels: int) -> ModelLayout | None:
    c = _values(data, _STARCODER2)
    rope = data.get("rope_parameters") or data.get("rope_scaling")
    if c is None or "partial_rotary_factor" in data or (
            rope is not None and (not isinstance(rope, dict) or rope.get("rope_type", rope.get("type")) != "default")):
        return None
    h, n_h, n_kv, f, n_layers = (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"],
                                 c["intermediate_size"], c["num_hidden_layers"])
    if min(h, n_h, n_kv, f, n_layers, c["vocab_size"]) <= 0 or h % n_h:
        return None
    d = c["head_dim"] or h // n_h
    b = c["use_bias"]
    modules = [ModuleEntry("", "other"), ModuleEntry("model", "other"),
               ModuleEntry("model.embed_tokens", "other", (Param("weight", (c["vocab_size"], h)),)),
               ModuleEntry("model.layers", "other")]
    for i in range(n_layers):
        p = f"model.layers.{i}"
        modules += [ModuleEntry(p, "other"), ModuleEntry(f"{p}.self_attn", "other"),
                    _linear(f"{p}.self_attn.q_proj", h, n_h * d, b), _linear(f"{p}.self_attn.k_proj", h, n_kv * d, b),
                    _linear(f"{p}.self_attn.v_proj", h, n_kv * d, b), _linear(f"{p}.self_attn.o_proj", n_h * d, h, b),
                    ModuleEntry(f"{p}.mlp", "other"), _linear(f"{p}.mlp.c_fc", h, f, b),
                    _linear(f"{p}.mlp.c_proj", f, h, b), ModuleEntry(f"{p}.mlp.act", "other"),
                    _layer_norm(f"{p}.input_layernorm", h), _layer_norm(f"{p}.post_attention_layernorm", h)]
    modules += [_layer_norm("model.norm", h), ModuleEntry("model.rotary_emb", "other")]
    out = _head(modules, base="model", embed="embed_tokens", hidden=h, vocab=c["vocab_size"],
                tie=c["tie_word_embeddings"], head=head, num_labels=num_labels)
    half = -(-d // 2)
    classify = head == "sequence-classification"
    return ModelLayout(
        model_type="starcoder2",
        class_name="Starcoder2ForSequenceClassification" if classify else "Starcoder2ForCausalLM",
        modules=tuple(modules),
        buffers=(("model.rotary_emb.inv_freq", half, 4), ("model.rotary_emb.original_inv_freq", half, 4)),
        layers="model.layers", num_layers=n_layers, output_head=out, default_skip=_default_skip(modules, out),
        hidden=h, heads=n_h, head_dim=d, kv_heads=n_kv, intermediate=f,
        residual_dropout=float(c["residual_dropout"] or 0.0), vocab_size=c["vocab_size"],
    )
