"""GPTBigCode's module tree written down from its config.json (transformers' ``GPTBigCode`` modeling code).

GPTBigCode (StarCoder/StarCoderBase; ``d_kv = d`` with multi-query attention, else ``h``; ``f = n_inner`` or
``4 h``), per layer ``transformer.h.i``::

    ln_1  LayerNorm h     attn.c_attn  Linear h -> h + 2 d_kv (+bias)    attn.c_proj  Linear h -> h (+bias)
    attn.resid_dropout    ln_2  LayerNorm h     mlp.c_fc  Linear h -> f (+bias)    mlp.c_proj  Linear f -> h (+bias)
    mlp.act, mlp.dropout

around them ``transformer.wte`` (V x h), ``transformer.wpe`` (n_positions x h), ``transformer.drop``,
``transformer.ln_f`` and the head; the causal mask buffer ``transformer.bias`` is n_positions^2 bools.
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

_GPT_BIGCODE: dict[str, tuple[Any, tuple[type, ...], bool]] = {
    "vocab_size": (50257, _INT, False), "n_positions": (1024, _INT, False), "n_embd": (768, _INT, False),
    "n_layer": (12, _INT, False), "n_head": (12, _INT, False), "n_inner": (None, _INT, True),
    "activation_function": ("gelu_pytorch_tanh", _STR, False), "resid_pdrop": (0.1, _FLOAT, False),
    "embd_pdrop": (0.1, _FLOAT, False), "attn_pdrop": (0.1, _FLOAT, False),
    "layer_norm_epsilon": (1e-5, _FLOAT, False), "initializer_range": (0.02, _FLOAT, False),
    "scale_attn_weights": (True, _BOOL, False), "use_cache": (True, _BOOL, False),
    "bos_token_id": (50256, _INT, True), "eos_token_id": (50256, _INT, True), "pad_token_id": (None, _INT, True),
    "attention_softmax_in_fp32": (True, _BOOL, False), "scale_attention_softmax_in_fp32": (True, _BOOL, False),
    "multi_query": (True, _BOOL, False), "add_cross_attention": (False, _BOOL, False),
    "tie_word_embeddings": (True, _BOOL, False),
}
#: Aliases transformers maps onto the GPTBigCode names (a config using them goes through the meta model).
_GPT_BIGCODE_ALIASES = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                        "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}


def _gpt_bigcode(data: dict[str, Any], head: str, num_labels: int) -> ModelLayout | None:
    if any(alias in data for alias in _GPT_BIGCODE_ALIASES):
        return None  # transformers 5 derives num_key_value_heads before it applies the aliases: let it say
    c = _values(data, _GPT_BIGCODE)
    if c is None or c["add_cross_attention"]:
        return None
    h, n_h, n_layers, n_pos, vocab = c["n_embd"], c["n_head"], c["n_layer"], c["n_positions"], c["vocab_size"]
    if min(h, n_h, n_layers, n_pos, vocab) <= 0 or h % n_h or (c["n_inner"] is not None and c["n_inner"] <= 0):
        return None
    d = h // n_h
    kv_heads = 1 if c["multi_query"] else n_h
    f = c["n_inner"] if c["n_inner"] is not None else 4 * h
    modules = [ModuleEntry("", "other"), ModuleEntry("transformer", "other"),
               ModuleEntry("transformer.wte", "other", (Param("weight", (vocab, h)),)),
               ModuleEntry("transformer.wpe", "other", (Param("weight", (n_pos, h)),)),
               ModuleEntry("transformer.drop", "other"), ModuleEntry("transformer.h", "other")]
    for i in range(n_layers):
        p = f"transformer.h.{i}"
        modules += [ModuleEntry(p, "other"), _layer_norm(f"{p}.ln_1", h), ModuleEntry(f"{p}.attn", "other"),
                    _linear(f"{p}.attn.c_attn", h, h + 2 * kv_heads * d, True), _linear(f"{p}.attn.c_proj", h, h, True),
                    ModuleEntry(f"{p}.attn.resid_dropout", "other"), _layer_norm(f"{p}.ln_2", h),
                    ModuleEntry(f"{p}.mlp", "other"), _linear(f"{p}.mlp.c_fc", h, f, True),
                    _linear(f"{p}.mlp.c_proj", f, h, True), ModuleEntry(f"{p}.mlp.act", "other"),
                    ModuleEntry(f"{p}.mlp.dropout", "other")]
    modules.append(_layer_norm("transformer.ln_f", h))
    out = _head(modules, base="transformer", embed="wte", hidden=h, vocab=vocab, tie=c["tie_word_embeddings"],
                head=head, num_labels=num_labels)
    classify = head == "sequence-classification"
    return ModelLayout(
        model_type="gpt_bigcode",
        class_name="GPTBigCodeForSequenceClassification" if classify else "GPTBigCodeForCausalLM",
        modules=tuple(modules), buffers=(("transformer.bias", n_pos * n_pos, 1),),
        layers="transformer.h", num_layers=n_layers, output_head=out, default_skip=_default_skip(modules, out),
        hidden=h, heads=n_h, head_dim=d, kv_heads=kv_heads, intermediate=c["n_inner"],
        residual_dropout=float(c["resid_pdrop"] or 0.0), vocab_size=vocab,
    )
