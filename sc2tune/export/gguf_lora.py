"""A LoRA adapter alone as a GGUF file for llama.cpp's ``--lora`` (``general.type: adapter``).

What ``convert_lora_to_gguf.py`` writes, with one difference that makes every PEFT scale come out right::

    general.architecture    the base's ("starcoder2" / "starcoder")
    adapter.type            "lora"
    adapter.lora.alpha      0
    blk.N.<tensor>.weight.lora_a   A  [r, in]        (llama.cpp ne = [in, r])
    blk.N.<tensor>.weight.lora_b   s * B  [out, r]   (float32 product, rounded once to the file's type)

llama.cpp applies ``W x + k * B_gguf (A_gguf x)`` with ``k = adapter_scale * alpha / r`` when alpha is non-zero
and ``k = adapter_scale`` when it is 0 (``llama_adapter_lora_weight::get_scale``). The converter copies PEFT's
``lora_alpha``, so ``alpha / r``: right for plain LoRA, wrong for rsLoRA (PEFT's scale is ``alpha / sqrt(r)``)
and for per-module ``rank_pattern`` / ``alpha_pattern``. Here each module's own PEFT scale ``s`` (see
:func:`sc2tune.merging.adapter.lora_scale`) is folded into its B and alpha is 0, so ``--lora FILE`` (scale 1)
computes exactly PEFT's ``W x + s B A x``, whatever the variant. PiSSA/OLoRA adapters as sc2tune saves them (a
rank-2r LoRA on the original base) are plain LoRA here; an unconverted one is refused by the adapter reader.

Refused, with a message saying to export merged (``--format gguf``): DoRA (llama.cpp has no magnitude vector),
``modules_to_save`` (a classifier's ``score`` head, trained embeddings), trained biases (``bias`` not ``none``),
LoRA on the embeddings or the output layer, ``fan_in_fan_out`` layers, a classification adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sc2tune.errors import UserError

_MERGED = "export the merged model instead: sc2tune export PATH --format gguf"


@dataclass(frozen=True)
class LoraExport:
    """What :func:`write_lora` wrote."""

    source: str
    tensors: int
    notes: list[str] = field(default_factory=list)


def write_lora(path: str | Path, file: Path, dtype: str, *, trust_remote_code: bool = False) -> LoraExport:
    """Write the adapter of ``path`` (an adapter or run folder) as a GGUF-LoRA into ``file`` (a staging path)."""
    import gguf
    import numpy as np
    import torch

    from sc2tune.architectures.layout import config_value
    from sc2tune.export.gguf_model import WRITER_DTYPES, architecture, convert, quiet_gguf, tensor_type
    from sc2tune.merging.adapter import load_adapter
    from sc2tune.modeling import ModelSource, load_config
    from sc2tune.runs import read_trained

    if dtype not in WRITER_DTYPES:  # the writer's own types: llama.cpp's quantiser takes models, not adapters
        raise UserError(f"--format gguf-lora writes {', '.join(WRITER_DTYPES)}, not --dtype {dtype}",
                        hint="llama.cpp's quantiser takes whole models: quantise the base GGUF instead")
    folder = read_trained(path, trust_remote_code=trust_remote_code)
    if folder.adapter_dir is None:
        raise UserError(f"{path} holds no adapter (a model folder or a full fine-tune)",
                        hint="a whole model exports with --format gguf")
    if folder.classifier:
        raise UserError(f"{path} is a sequence-classification adapter: llama.cpp has no classification head",
                        hint="serve a classifier with transformers (sc2tune classify)")
    adapter = load_adapter(folder.adapter_dir, trust_remote_code=trust_remote_code)
    config_file = folder.adapter_dir / "adapter_config.json"
    cfg = adapter.config
    if cfg.get("use_dora"):
        raise UserError(f"{config_file}: a DoRA adapter (use_dora): llama.cpp's --lora cannot apply its "
                        "magnitude vectors", hint=_MERGED)
    if str(cfg.get("bias") or "none") != "none":
        raise UserError(f"{config_file}: bias is '{cfg.get('bias')}': llama.cpp's --lora cannot apply trained "
                        "biases", hint=_MERGED)
    if cfg.get("modules_to_save") or adapter.full:
        what = ", ".join(sorted(cfg.get("modules_to_save") or [])) or ", ".join(sorted(adapter.full)[:3])
        raise UserError(f"{config_file}: the adapter saves whole modules ({what}): llama.cpp's --lora applies "
                        "only low-rank updates", hint=_MERGED)
    if cfg.get("fan_in_fan_out"):
        raise UserError(f"{config_file}: fan_in_fan_out layers are not exported as GGUF-LoRA", hint=_MERGED)
    base = load_config(ModelSource(str(folder.base_dir()), trust_remote_code=folder.trust_remote_code))
    arch = architecture(base)
    names = gguf.get_tensor_name_map(arch, int(config_value(base, "num_hidden_layers", "n_layer")))
    plans: list[tuple[str, np.ndarray, object]] = []
    for module, factors in sorted(adapter.lora.items()):
        target = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if factors.embedding or target is None or target in ("token_embd.weight", "output.weight") \
                or not target.startswith("blk."):
            raise UserError(f"{config_file}: LoRA on '{module}' (an embedding, the output layer or a module "
                            "llama.cpp does not name) is not exported as GGUF-LoRA", hint=_MERGED)
        a = factors.a.to(torch.float32)
        b = factors.b.to(torch.float32) * factors.scale  # PEFT's scale folded into B (module docstring)
        for suffix, tensor in ((".lora_a", a), (".lora_b", b)):
            name = target + suffix
            qtype = tensor_type(name.replace(suffix, ".weight"), tuple(tensor.shape), dtype)  # type: ignore[arg-type]
            plans.append((name, convert(tensor, qtype), qtype))
    with quiet_gguf():
        writer = gguf.GGUFWriter(file, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_name(folder.adapter_dir.parent.name if folder.run_dir else folder.adapter_dir.name)
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for name, data, qtype in plans:
            writer.add_tensor(name, data, raw_dtype=qtype)  # type: ignore[arg-type]
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    rs = " (rsLoRA: alpha / sqrt(r))" if cfg.get("use_rslora") else ""
    note = f"each module's PEFT scale{rs} is folded into lora_b; adapter.lora.alpha is 0 (llama.cpp scale 1)"
    return LoraExport(f"adapter {folder.adapter_dir} (base {folder.base_name})", len(plans), [note])
