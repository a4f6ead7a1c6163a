"""A model's module tree as plain data (:class:`ModelLayout`), derived from config.json without torch.

The planner and the LoRA target check need names, kinds and shapes of a model's modules, never weights.
For the architectures sc2tune ships (``starcoder2``, ``gpt_bigcode``) :func:`analytic_layout` writes the tree
down from the config (transformers' modeling code, transcribed); :func:`layout_of_model` reads the same data
off any instantiated (meta-device) model, which is the fallback for every other architecture and the
reference the analytic layouts are tested against.

StarCoder2 (``h`` hidden, ``n_h`` heads, ``n_kv`` key/value heads, ``d = h / n_h``, ``f`` MLP width,
``b`` = ``use_bias``), per layer ``model.layers.i``::

    self_attn.q_proj  Linear h -> n_h d (+b)      self_attn.k_proj / v_proj  Linear h -> n_kv d (+b)
    self_attn.o_proj  Linear n_h d -> h (+b)      mlp.c_fc  Linear h -> f (+b)   mlp.c_proj  Linear f -> h (+b)
    mlp.act, input_layernorm / post_attention_layernorm  LayerNorm h (weight, bias)

around them ``model.embed_tokens`` (V x h), ``model.norm`` (LayerNorm h), ``model.rotary_emb`` (buffers
``inv_freq`` and ``original_inv_freq``: ``ceil(d/2)`` fp32 each) and ``lm_head`` (h -> V, no bias; the same
tensor as the embeddings when ``tie_word_embeddings``) or ``score`` (h -> num_labels, no bias).

GPTBigCode (StarCoder/StarCoderBase; ``d_kv = d`` with multi-query attention, else ``h``; ``f = n_inner`` or
``4 h``), per layer ``transformer.h.i``::

    ln_1  LayerNorm h     attn.c_attn  Linear h -> h + 2 d_kv (+bias)    attn.c_proj  Linear h -> h (+bias)
    attn.resid_dropout    ln_2  LayerNorm h     mlp.c_fc  Linear h -> f (+bias)    mlp.c_proj  Linear f -> h (+bias)
    mlp.act, mlp.dropout

around them ``transformer.wte`` (V x h), ``transformer.wpe`` (n_positions x h), ``transformer.drop``,
``transformer.ln_f`` and the head; the causal mask buffer ``transformer.bias`` is n_positions^2 bools.

A config the transcription does not cover (remote code, another rope type, cross-attention, a value of the wrong type,
GPTBigCode's ``hidden_size``-style aliases)
returns None from :func:`analytic_layout`, and the caller builds the meta model instead, so the answers stay
transformers' own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

#: Module kinds: ``linear`` is exactly ``nn.Linear`` (what bitsandbytes quantises), ``linear-subclass`` a
#: subclass of it, ``conv1d`` transformers' GPT-2 ``Conv1D`` (weight stored in x out), ``norm`` / ``rms-norm``
#: a normalisation layer (by class name), ``other`` anything else.
KINDS = ("linear", "linear-subclass", "conv1d", "norm", "rms-norm", "other")

#: Architectures :func:`analytic_layout` writes down from the config.
ANALYTIC_ARCHITECTURES = frozenset({"starcoder2", "gpt_bigcode"})


@dataclass(frozen=True)
class Param:
    """One parameter of a module (not its submodules)."""

    name: str  #: within its module: ``weight``, ``bias``
    shape: tuple[int, ...]
    shared_with: str | None = None  #: full name of the earlier parameter it is the same tensor as (tied)
    floating: bool = True
    element_size: int = 0  #: bytes per element, for non-floating parameters only (floating ones take the load dtype)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ModuleEntry:
    """One module of the tree, in ``named_modules()`` order, with its own parameters."""

    name: str  #: full dotted name ("" for the root)
    kind: str  #: one of :data:`KINDS`
    params: tuple[Param, ...] = ()

    @property
    def linear(self) -> bool:
        """A linear layer for the planner (``nn.Linear`` and subclasses, ``Conv1D``)."""
        return self.kind in ("linear", "linear-subclass", "conv1d")

    @property
    def quantizable(self) -> bool:
        """bitsandbytes replaces exactly ``nn.Linear`` and ``Conv1D``."""
        return self.kind in ("linear", "conv1d")

    def weight_shape(self) -> tuple[int, int]:
        """(out, in) of a linear layer's weight (``Conv1D`` stores it transposed)."""
        shape = next(p.shape for p in self.params if p.name == "weight")
        return (shape[0], shape[1]) if self.kind != "conv1d" else (shape[1], shape[0])


@dataclass(frozen=True)
class ModelLayout:
    """Everything the planner and the target check read off a model, as plain data.

    Config-derived fields are None for a bare ``nn.Module`` without a transformers config.
    """

    model_type: str
    class_name: str
    modules: tuple[ModuleEntry, ...]
    buffers: tuple[tuple[str, int, int], ...]  #: (name, numel, element size)
    layers: str | None  #: name of the decoder layers' ModuleList (the longest ModuleList)
    num_layers: int
    output_head: str | None  #: name of the output embeddings module
    default_skip: tuple[str, ...] | None  #: transformers' ``get_keys_to_not_convert`` (sorted)
    keep_in_fp32: tuple[str, ...] = ()
    hidden: int | None = None
    heads: int | None = None
    head_dim: int | None = None
    kv_heads: int | None = None
    intermediate: int | None = None  #: ``intermediate_size`` / ``n_inner`` as configured (None: not set)
    residual_dropout: float = 0.0
    vocab_size: int | None = None

    def linears(self) -> dict[str, ModuleEntry]:
        """Linear layers by full name, in module order."""
        return {m.name: m for m in self.modules if m.linear}

    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]

    def params_under(self, name: str) -> Iterator[tuple[str, Param]]:
        """(full name, parameter) of module ``name`` and its submodules, tied duplicates included."""
        for m in self.modules:
            if name == "" or m.name == name or m.name.startswith(f"{name}."):
                for p in m.params:
                    yield (f"{m.name}.{p.name}" if m.name else p.name), p

    def buffer_bytes(self) -> int:
        return sum(n * size for _, n, size in self.buffers)


def _kind(module: nn.Module) -> str:
    from torch import nn
    from transformers.pytorch_utils import Conv1D

    if type(module) is nn.Linear:
        return "linear"
    if isinstance(module, nn.Linear):
        return "linear-subclass"
    if isinstance(module, Conv1D):
        return "conv1d"
    name = type(module).__name__.lower()
    if "norm" in name:
        return "rms-norm" if "rms" in name else "norm"
    return "other"


def _cfg(config: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def layout_of_model(model: nn.Module) -> ModelLayout:
    """Read the layout off an instantiated model (meta device or not): the reference for :func:`analytic_layout`."""
    from torch import nn

    seen: dict[int, str] = {}
    modules = []
    best: tuple[str, int] | None = None
    for name, module in model.named_modules():
        params = []
        for pname, p in module.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            floating = p.is_floating_point()
            params.append(Param(pname, tuple(int(d) for d in p.shape), seen.get(id(p)), floating,
                                0 if floating else p.element_size()))
            seen.setdefault(id(p), full)
        modules.append(ModuleEntry(name, _kind(module), tuple(params)))
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (best is None or len(module) > best[1]):
            best = (name, len(module))
    buffers = tuple((n, b.numel(), b.element_size()) for n, b in model.named_buffers())
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    head_name = next((n for n, m in model.named_modules() if head is not None and m is head), None)
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        skip: tuple[str, ...] | None = tuple(sorted(get_keys_to_not_convert(model)))
    except (ImportError, AttributeError):
        skip = (head_name,) if head_name is not None else None
    config = getattr(model, "config", None)
    extra: dict[str, Any] = {}
    if config is not None:
        hidden = int(_cfg(config, "hidden_size", "n_embd"))
        heads = int(_cfg(config, "num_attention_heads", "n_head"))
        kv = _cfg(config, "num_key_value_heads")
        if kv is None:
            kv = 1 if getattr(config, "multi_query", False) else heads
        inter = _cfg(config, "intermediate_size", "n_inner")
        extra = dict(
            hidden=hidden, heads=heads, head_dim=int(_cfg(config, "head_dim", default=hidden // heads)),
            kv_heads=int(kv), intermediate=None if inter is None else int(inter),
            residual_dropout=float(_cfg(config, "residual_dropout", "resid_pdrop", "hidden_dropout", default=0.0)
                                   or 0.0),
            vocab_size=int(config.vocab_size),
        )
    return ModelLayout(
        model_type=getattr(config, "model_type", "") if config is not None else "",
        class_name=type(model).__name__, modules=tuple(modules), buffers=buffers,
        layers=best[0] if best else None, num_layers=best[1] if best else 0, output_head=head_name,
        default_skip=skip, keep_in_fp32=tuple(sorted(getattr(model, "_keep_in_fp32_modules", None) or ())),
        **extra,
    )


# ---- the analytic layouts ------------------------------------------------------------------------------

#: The config fields each architecture reads, their defaults (transformers 5's config classes) and types.
_INT, _FLOAT, _BOOL, _STR = (int,), (int, float), (bool,), (str,)
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


def _values(data: dict[str, Any], fields: dict[str, tuple[Any, tuple[type, ...], bool]]) -> dict[str, Any] | None:
    """The fields with their defaults filled in, or None when a value is not of the field's type."""
    out = {}
    for name, (default, types, nullable) in fields.items():
        value = data.get(name, default)
        if value is None and nullable:
            out[name] = None
            continue
        if not isinstance(value, types) or isinstance(value, bool) != (bool in types):  # True is no int here
            return None
        out[name] = value
    return out


def _linear(name: str, in_f: int, out_f: int, bias: bool, shared_with: str | None = None) -> ModuleEntry:
    params = (Param("weight", (out_f, in_f), shared_with),) + ((Param("bias", (out_f,)),) if bias else ())
    return ModuleEntry(name, "linear", params)


def _layer_norm(name: str, h: int) -> ModuleEntry:
    return ModuleEntry(name, "norm", (Param("weight", (h,)), Param("bias", (h,))))


def _default_skip(modules: list[ModuleEntry], output_head: str | None) -> tuple[str, ...]:
    """transformers' ``get_keys_to_not_convert``: tied weights (both ends), the last parameter, the output layer."""
    keys: set[str] = set()
    last = None
    for m in modules:
        for p in m.params:
            full = f"{m.name}.{p.name}" if m.name else p.name
            if p.shared_with is not None:
                keys.update((full, p.shared_with))
            else:
                last = full
    if last is not None:
        keys.add(last)
    if output_head is not None:
        keys.add(output_head)
    return tuple(sorted({k.removesuffix(".weight") for k in keys}))


def _head(modules: list[ModuleEntry], *, base: str, embed: str, hidden: int, vocab: int, tie: bool,
          head: str, num_labels: int) -> str | None:
    """Append the causal LM head (tied to ``embed`` when ``tie``) or the classification ``score``."""
    if head == "sequence-classification":
        modules.append(_linear("score", hidden, num_labels, False))
        return None
    modules.append(_linear("lm_head", hidden, vocab, False, f"{base}.{embed}.weight" if tie else None))
    return "lm_head"


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


def analytic_layout(data: dict[str, Any], *, head: str = "causal-lm", num_labels: int = 2) -> ModelLayout | None:
    """The layout of a config.json (as a dict) for the architectures in :data:`ANALYTIC_ARCHITECTURES`.

    None when the architecture is another one or the config is outside what the transcription covers
    (the caller then builds the meta model).
    """
    model_type = data.get("model_type")
    if "auto_map" in data:  # the model's own code decides its modules
        return None
    if head not in ("causal-lm", "sequence-classification") or not isinstance(num_labels, int) or num_labels < 1:
        return None
    if model_type == "starcoder2":
        return _starcoder2(data, head, num_labels)
    if model_type == "gpt_bigcode":
        return _gpt_bigcode(data, head, num_labels)
    return None
