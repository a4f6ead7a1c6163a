"""Read the shapes the planner needs off a meta model: decoder layers, their linears, and the LoRA targets.

Everything comes from the instantiated (weightless) module tree plus the config's head counts, so any
decoder-only architecture transformers knows works: StarCoder2 (q/k/v/o_proj, c_fc/c_proj, LayerNorm),
GPTBigCode (fused c_attn, multi-query), Llama-style models (gated MLP, RMSNorm).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from sc2tune.errors import RecipeError
from sc2tune.planning.activations import BlockSpec, LinearSpec
from sc2tune.planning.weights import is_quantizable

_GATED_NAMES = {"gate_proj", "w1", "w3", "gate_up_proj"}


@dataclass(frozen=True)
class AdapterShape:
    """The trainable part of a LoRA model."""

    targets: tuple[str, ...]  #: full module names that get a LoRA pair
    lora_params: int  #: r (in + out) per target (+ out with DoRA)
    saved_module_params: int  #: parameters of modules_to_save (trained in full, copied)


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` of decoder layers: the longest ModuleList in the model."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and (best is None or len(module) > len(best[1])):
            best = (name, module)
    if best is None:
        raise RecipeError(f"cannot find the decoder layers of {type(model).__name__}")
    return best


def linear_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every linear layer (``nn.Linear`` and subclasses, ``Conv1D``) by full name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear) or is_quantizable(m)}


def _matches(name: str, key: str) -> bool:
    return name == key or name.endswith(f".{key}")


def resolve_targets(model: PreTrainedModel, target_modules: list[str] | str) -> tuple[str, ...]:
    """Full names of the linear layers LoRA wraps, with PEFT's matching (exact name or ``.suffix``).

    ``all-linear`` is every linear layer but the output head; ``auto`` the architecture's defaults. A name
    that matches no linear layer is an error (a LoRA target copied from another architecture).
    """
    linears = linear_modules(model)
    head = model.get_output_embeddings()
    if target_modules == "all-linear":
        return tuple(n for n, m in linears.items() if m is not head and not n.endswith("score"))
    if target_modules == "auto":
        from sc2tune.modeling import default_target_modules

        target_modules = default_target_modules(model.config.model_type)
    assert isinstance(target_modules, list)
    missing = [key for key in target_modules if not any(_matches(n, key) for n in linears)]
    if missing:
        names = sorted({n.rsplit(".", 1)[-1] for n in linears})
        raise RecipeError(
            f"adapter.target_modules: {', '.join(missing)} match no linear layer of {type(model).__name__}",
            hint=f"its linear layers are: {', '.join(names)}",
        )
    return tuple(n for n in linears if any(_matches(n, key) for key in target_modules))


def adapter_shape(model: PreTrainedModel, targets: tuple[str, ...], *, r: int, dora: bool,
                  modules_to_save: list[str]) -> AdapterShape:
    """LoRA parameter count: ``A`` is r x in, ``B`` is out x r for each target (DoRA adds out magnitudes)."""
    modules = dict(model.named_modules())
    lora = 0
    for name in targets:
        weight = modules[name].weight
        out_f, in_f = weight.shape if isinstance(modules[name], nn.Linear) else weight.shape[::-1]
        lora += r * (in_f + out_f) + (out_f if dora else 0)
    saved = 0
    seen: set[int] = set()
    for name, module in modules.items():
        if any(_matches(name, key) for key in modules_to_save):
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    saved += p.numel()
    return AdapterShape(targets, lora, saved)


def _cfg(config: PretrainedConfig, *names: str, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def block_spec(model: PreTrainedModel, targets: tuple[str, ...], *, full: bool) -> tuple[BlockSpec, int]:
    """Shapes of decoder layer 0 (all layers are alike) and the number of layers."""
    config = model.config
    prefix, layers = decoder_layers(model)
    block = layers[0]
    hidden = int(_cfg(config, "hidden_size", "n_embd"))
    heads = int(_cfg(config, "num_attention_heads", "n_head"))
    head_dim = int(_cfg(config, "head_dim", default=hidden // heads))
    kv_heads = _cfg(config, "num_key_value_heads")
    if kv_heads is None:
        kv_heads = 1 if getattr(config, "multi_query", False) else heads
    target_set = {t for t in targets if t.startswith(f"{prefix}.0.")}
    linears = []
    for name, module in block.named_modules():
        if isinstance(module, nn.Linear) or is_quantizable(module):
            weight = module.weight
            out_f, in_f = weight.shape if isinstance(module, nn.Linear) else weight.shape[::-1]
            linears.append(LinearSpec(name, int(in_f), int(out_f), f"{prefix}.0.{name}" in target_set, full))
    short = {lin.name.rsplit(".", 1)[-1] for lin in linears}
    gated = bool(short & _GATED_NAMES)
    intermediate = _cfg(config, "intermediate_size", "n_inner")
    if intermediate is None:
        intermediate = max((lin.out_features for lin in linears), default=4 * hidden)
    norms = [m for m in block.modules() if "norm" in type(m).__name__.lower()]
    rms = any("rms" in type(m).__name__.lower() for m in norms)
    resid_p = float(_cfg(config, "residual_dropout", "resid_pdrop", "hidden_dropout", default=0.0) or 0.0)
    spec = BlockSpec(
        hidden=hidden, intermediate=int(intermediate), q_width=heads * head_dim,
        kv_width=int(kv_heads) * head_dim, heads=heads, norms=len(norms), rms_norm=rms, gated_mlp=gated,
        residual_dropouts=2 if resid_p > 0 else 0, linears=tuple(linears),
    )
    return spec, len(layers)
