"""What the analytic layouts are built from: config fields read with their types and defaults, Linear and
LayerNorm entries, the output head, and transformers' default list of modules kept out of quantisation."""

from __future__ import annotations

from typing import Any

from sc2tune.architectures.layout import ModuleEntry, Param

#: The types a config field may hold. Each architecture lists the fields it reads as ``name: (default, types,
#: may be None)``, the defaults those of transformers 5's config classes.
_INT, _FLOAT, _BOOL, _STR = (int,), (int, float), (bool,), (str,)


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

