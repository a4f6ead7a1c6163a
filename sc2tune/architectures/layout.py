"""A model's module tree as plain data: :class:`ModelLayout` of :class:`ModuleEntry` and :class:`Param`, and
:func:`layout_of_model`, which reads it off an instantiated model (torch imported only there)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

#: Module kinds: ``linear`` is exactly ``nn.Linear`` (what bitsandbytes quantises), ``linear-subclass`` a
#: subclass of it, ``conv1d`` transformers' GPT-2 ``Conv1D`` (weight stored in x out), ``norm`` / ``rms-norm``
#: a normalisation layer (by class name), ``other`` anything else.
KINDS = ("linear", "linear-subclass", "conv1d", "norm", "rms-norm", "other")


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


def distinct_numel(params: Iterable[tuple[str, Param]]) -> int:
    """Elements of the tensors among ``params`` ((full name, parameter) pairs), each tensor once: a tied
    parameter is the tensor it is shared with."""
    return sum({p.shared_with or name: p.numel for name, p in params}.values())


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


def config_value(config: Any, *names: str, default: Any = None) -> Any:
    """The first of the config attributes ``names`` that is set (not None), else ``default``: one reader for the
    fields architectures spell differently (``n_layer`` / ``num_hidden_layers``, ...)."""
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
        hidden = int(config_value(config, "hidden_size", "n_embd"))
        heads = int(config_value(config, "num_attention_heads", "n_head"))
        no_kv_field = 1 if getattr(config, "multi_query", False) else heads  # GPTBigCode: multi-query or not
        kv = config_value(config, "num_key_value_heads", default=no_kv_field)
        inter = config_value(config, "intermediate_size", "n_inner")
        extra = dict(
            hidden=hidden, heads=heads, head_dim=int(config_value(config, "head_dim", default=hidden // heads)),
            kv_heads=int(kv), intermediate=None if inter is None else int(inter),
            residual_dropout=float(config_value(config, "residual_dropout", "resid_pdrop", "hidden_dropout", default=0.0)
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
