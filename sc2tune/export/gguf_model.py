"""A model as one GGUF file, written with llama.cpp's ``gguf`` package the way ``convert_hf_to_gguf.py`` does.

Architectures (``general.architecture``) and their hyper-parameters::

    Starcoder2ForCausalLM  -> "starcoder2": block_count, context_length (max_position_embeddings),
                              embedding_length, feed_forward_length (intermediate_size), head_count,
                              head_count_kv, rope.freq_base (rope_theta), attention.layer_norm_epsilon
    GPTBigCodeForCausalLM  -> "starcoder" (StarCoder/StarCoderBase): context_length (n_positions),
                              embedding_length, feed_forward_length (n_inner or 4 n_embd), block_count,
                              head_count, head_count_kv 1 (multi-query attention only), layer_norm_epsilon

Tensors are renamed by gguf's own table (``gguf.get_tensor_name_map``: ``model.layers.3.mlp.c_fc.weight`` ->
``blk.3.ffn_up.weight``); a tied ``lm_head`` is not written (llama.cpp reuses ``token_embd`` as the output, as
the converter leaves it), an untied one is ``output.weight``. Tensor types follow the converter: 1-D tensors,
norms, biases and learned position embeddings stay F32; the other weights take the file's type (F32, F16, BF16
or Q8_0; a row length Q8_0's 32-value blocks do not divide falls back to F16, as the converter does).

The file is streamed: every tensor's name, shape and type (known before any weight is read) go into the
header, then each tensor is read (or merged), converted, written and dropped. Peak memory is one tensor.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sc2tune.architectures.layout import config_value
from sc2tune.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, GGUFWriter
    from transformers import PretrainedConfig

    from sc2tune.export.gguf_tokenizer import GgufVocab
    from sc2tune.export.weights import Weights

log = logging.getLogger(__name__)

#: File types the gguf writer produces itself (llama.cpp's quantiser makes the others from an f32 file).
WriterDtype = Literal["f32", "f16", "bf16", "q8_0"]
WRITER_DTYPES: tuple[str, ...] = ("f32", "f16", "bf16", "q8_0")


@contextlib.contextmanager
def quiet_gguf() -> Iterator[None]:
    """The gguf writer's INFO lines (file plan, endianness) kept out of sc2tune's output."""
    logger = logging.getLogger("gguf")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


@dataclass(frozen=True)
class TensorPlan:
    """One GGUF tensor: its Hugging Face source, its GGUF name, shape (rows, columns) and type."""

    hf_name: str
    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType
    nbytes: int


def architecture(config: PretrainedConfig) -> Any:
    """``gguf.MODEL_ARCH`` of the model, or a UserError naming what llama.cpp cannot run."""
    import gguf

    model_type = getattr(config, "model_type", None)
    if model_type == "starcoder2":
        return gguf.MODEL_ARCH.STARCODER2
    if model_type == "gpt_bigcode":
        if not getattr(config, "multi_query", True):
            raise UserError("this GPTBigCode model has multi_query: false; llama.cpp's 'starcoder' architecture "
                            "runs multi-query attention (one key/value head, as StarCoder/StarCoderBase) only",
                            hint="serve it with transformers or vLLM (sc2tune merge gives a plain folder)")
        return gguf.MODEL_ARCH.STARCODER
    raise UserError(f"GGUF export supports StarCoder2 and GPTBigCode (StarCoder) models, not '{model_type}'",
                    hint="export a model of those architectures, or convert it with llama.cpp's own converter")


def write_hparams(writer: GGUFWriter, config: PretrainedConfig, arch: Any) -> None:
    """The architecture's hyper-parameter keys (see the module docstring)."""
    import gguf

    if arch == gguf.MODEL_ARCH.STARCODER:
        n_embd = int(config.n_embd)
        writer.add_context_length(int(config.n_positions))
        writer.add_embedding_length(n_embd)
        writer.add_feed_forward_length(int(config.n_inner or 4 * n_embd))
        writer.add_block_count(int(config.n_layer))
        writer.add_head_count(int(config.n_head))
        writer.add_head_count_kv(1)
        writer.add_layer_norm_eps(float(config.layer_norm_epsilon))
        return
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config_value(config, "num_key_value_heads", default=config.num_attention_heads)))
    # transformers' rope_parameters, or the older rope_scaling / rope_theta fields
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    kind = rope.get("rope_type", rope.get("type"))
    factor = rope.get("factor")
    if kind not in (None, "default"):
        if kind != "linear" or factor is None:
            raise UserError(f"rope scaling '{kind}' of this model is not one GGUF export handles",
                            hint="export a model with default (or linear) RoPE")
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_eps(float(config_value(config, "norm_epsilon", "layer_norm_eps", "layer_norm_epsilon")))
    head_dim = getattr(config, "head_dim", None)
    if head_dim is not None and head_dim != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))


def tensor_type(name: str, shape: tuple[int, ...], dtype: WriterDtype) -> Any:
    """The converter's rule: F32 for 1-D tensors, norms, biases and position embeddings, else the file's type
    (Q8_0 only for rows its 32-value blocks divide, else F16)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight") \
            or name.startswith("position_embd."):
        return GGMLQuantizationType.F32
    qtype = GGMLQuantizationType[dtype.upper()]  # F32, F16, BF16, Q8_0
    block = GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        log.info("%s: rows of %d values do not split into %s blocks; written as F16", name, shape[-1], qtype.name)
        return GGMLQuantizationType.F16
    return qtype


def plan_tensors(weights: Weights, arch: Any, dtype: WriterDtype) -> list[TensorPlan]:
    """Every tensor's GGUF name, shape and type, before any weight is read; an unknown name is an error."""
    import gguf

    config = weights.config
    blocks = int(config_value(config, "num_hidden_layers", "n_layer"))
    names = gguf.get_tensor_name_map(arch, blocks)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    plans: list[TensorPlan] = []
    for hf_name, shape in weights.shapes.items():
        if hf_name.endswith((".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")):
            continue  # buffers, not weights (the converter drops them too)
        new = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise UserError(f"tensor '{hf_name}' has no GGUF name for llama.cpp's "
                            f"'{gguf.MODEL_ARCH_NAMES[arch]}' architecture",
                            hint="the folder holds weights llama.cpp does not know; export a plain causal LM")
        if tied and new == "output.weight":
            continue  # tied: llama.cpp uses token_embd as the output (the converter writes no output.weight)
        qtype = tensor_type(new, shape, dtype)
        nbytes = math.prod(int(dim) for dim in gguf.quant_shape_to_byte_shape(shape, qtype))
        plans.append(TensorPlan(hf_name, new, tuple(shape), qtype, nbytes))
    return plans


def convert(tensor: torch.Tensor, qtype: Any) -> np.ndarray:
    """A tensor as the bytes (or values) GGUF stores for ``qtype`` (gguf's own quantiser)."""
    import torch
    from gguf import quants

    array = tensor.detach().to(torch.float32).contiguous().numpy()
    return quants.quantize(array, qtype)


@quiet_gguf()
def write_model(weights: Weights, file: Path, dtype: WriterDtype, *, name: str, vocab: GgufVocab,
                chat_template: str | None) -> int:
    """Write the GGUF model file ``file`` (not atomic: the caller writes a staging path); returns its tensor
    count."""
    import gguf
    import numpy as np

    from sc2tune.export.gguf_tokenizer import write_vocab

    arch = architecture(weights.config)
    plans = plan_tensors(weights, arch, dtype)
    by_name = {p.hf_name: p for p in plans}
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_size_label(gguf.size_label(sum(math.prod(p.shape) for p in plans), 0, 0, 0))
    write_hparams(writer, weights.config, arch)
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                  "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    writer.add_file_type(file_types[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_vocab(writer, vocab, chat_template=chat_template)
    for p in plans:
        writer.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    writer.write_header_to_file(path=file)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        written = 0
        for hf_name, tensor in weights.tensors():
            plan = by_name.get(hf_name)
            if plan is None:
                continue
            if tuple(tensor.shape) != plan.shape:
                raise UserError(f"tensor '{hf_name}' is {tuple(tensor.shape)}, its header says {plan.shape}")
            writer.write_tensor_data(convert(tensor, plan.qtype))
            written += 1
        if written != len(plans):
            raise RuntimeError(f"wrote {written} of {len(plans)} tensors")  # a bug, not the user's input
    finally:
        writer.close()
    return len(plans)
