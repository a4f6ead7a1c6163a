"""Read the shapes the planner needs off a model's layout: decoder layers, their linears, and the LoRA targets.

Everything comes from the :class:`~sc2tune.architectures.ModelLayout` (module names, kinds and shapes; written
down from config.json for StarCoder2/GPTBigCode, read off a meta model otherwise) plus the config's head counts,
so any decoder-only architecture transformers knows works: StarCoder2 (q/k/v/o_proj, c_fc/c_proj, LayerNorm),
GPTBigCode (fused c_attn, multi-query), Llama-style models (gated MLP, RMSNorm). An instantiated model's layout
is :func:`~sc2tune.architectures.layout_of_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sc2tune.architectures import ModelLayout
from sc2tune.architectures.layout import distinct_numel
from sc2tune.errors import RecipeError
from sc2tune.planning.activations import BlockSpec, LinearSpec

_GATED_NAMES = {"gate_proj", "w1", "w3", "gate_up_proj"}


@dataclass(frozen=True)
class AdapterShape:
    """The trainable part of a LoRA model."""

    lora_params: int  #: r (in + out) per target (+ out with DoRA)
    saved_module_params: int  #: parameters of modules_to_save (trained in full, copied)


def decoder_layers(layout: ModelLayout) -> tuple[str, int]:
    """Name and length of the decoder layers' ``ModuleList``: the longest ModuleList in the model."""
    if layout.layers is None:
        raise RecipeError(f"cannot find the decoder layers of {layout.class_name}")
    return layout.layers, layout.num_layers


def _matches(name: str, key: str) -> bool:
    return name == key or name.endswith(f".{key}")


def resolve_targets(layout: ModelLayout, target_modules: list[str] | str) -> tuple[str, ...]:
    """Full names of the linear layers LoRA wraps, with PEFT's matching (exact name or ``.suffix``).

    ``all-linear`` is every linear layer but the output head; ``auto`` the architecture's defaults. A name
    that matches no linear layer is an error (a LoRA target copied from another architecture).
    """
    linears = layout.linears()
    if target_modules == "all-linear":
        return tuple(n for n in linears if n != layout.output_head and not n.endswith("score"))
    if target_modules == "auto":
        from sc2tune.modeling import default_target_modules

        target_modules = default_target_modules(layout.model_type)
    assert isinstance(target_modules, list)
    missing = [key for key in target_modules if not any(_matches(n, key) for n in linears)]
    if missing:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise RecipeError(
            f"adapter.target_modules: {', '.join(missing)} match no linear layer of {layout.class_name}",
            hint=f"its linear layers are: {', '.join(names)}",
        )
    return tuple(n for n in linears if any(_matches(n, key) for key in target_modules))


def adapter_shape(layout: ModelLayout, targets: tuple[str, ...], *, r: int, dora: bool,
                  modules_to_save: list[str]) -> AdapterShape:
    """LoRA parameter count: ``A`` is r x in, ``B`` is out x r for each target (DoRA adds out magnitudes)."""
    modules = {m.name: m for m in layout.modules}
    lora = 0
    for name in targets:
        out_f, in_f = modules[name].weight_shape()
        lora += r * (in_f + out_f) + (out_f if dora else 0)
    saved = distinct_numel(item for name in modules if any(_matches(name, key) for key in modules_to_save)
                           for item in layout.params_under(name))
    return AdapterShape(lora, saved)


def block_spec(layout: ModelLayout, targets: tuple[str, ...], *, full: bool) -> tuple[BlockSpec, int]:
    """Shapes of decoder layer 0 (all layers are alike) and the number of layers."""
    prefix, count = decoder_layers(layout)
    if layout.hidden is None or layout.heads is None or layout.head_dim is None or layout.kv_heads is None:
        raise RecipeError(f"{layout.class_name} has no transformers config to read its head counts from")
    hidden, heads, head_dim, kv_heads = layout.hidden, layout.heads, layout.head_dim, layout.kv_heads
    block = f"{prefix}.0"
    in_block = [m for m in layout.modules if m.name == block or m.name.startswith(f"{block}.")]
    target_set = {t for t in targets if t.startswith(f"{block}.")}
    linears = []
    for module in in_block:
        if module.linear:
            out_f, in_f = module.weight_shape()
            linears.append(LinearSpec(module.name[len(block) + 1:], int(in_f), int(out_f), module.name in target_set,
                                      full))
    short = {lin.name.rsplit(".", 1)[-1] for lin in linears}
    gated = bool(short & _GATED_NAMES)
    intermediate = layout.intermediate
    if intermediate is None:
        intermediate = max((lin.out_features for lin in linears), default=4 * hidden)
    norms = [m for m in in_block if m.kind in ("norm", "rms-norm")]
    rms = any(m.kind == "rms-norm" for m in norms)
    resid_p = layout.residual_dropout
    spec = BlockSpec(
        hidden=hidden, intermediate=int(intermediate), q_width=heads * head_dim,
        kv_width=int(kv_heads) * head_dim, heads=heads, norms=len(norms), rms_norm=rms, gated_mlp=gated,
        residual_dropouts=2 if resid_p > 0 else 0, linears=tuple(linears),
    )
    return spec, count
