"""The weights a GGUF model file stores, read back into a transformers model (``--verify``'s engine reference).

The file is read with llama.cpp's own ``gguf.GGUFReader`` (memory-mapped) and every tensor turned into the
float32 values llama.cpp computes with, by ``gguf.quants.dequantize``: F32 as stored, F16/BF16 widened
exactly (``w.to(dtype).float()``), Q8_0 as ``d * q`` per 32-value block (``d`` the block's F16 scale, ``q``
its int8 values), K-quants and the other types by gguf's reference dequantisers. GGUF shapes are ggml's
(``ne0`` = the row length first); the arrays come back in numpy/PyTorch order (rows, columns), the Hugging Face
layout, since the exporter writes tensors untransposed.

Names go back through gguf's table for the file's own architecture (``general.architecture``,
``{arch}.block_count``): a model parameter ``model.layers.3.mlp.c_fc.weight`` reads ``blk.3.ffn_up.weight``.
A tied ``lm_head`` has no tensor of its own (llama.cpp reuses ``token_embd``); a file with ``output.weight``
for a model whose head is tied unties the head.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.errors import UserError

if TYPE_CHECKING:
    import numpy as np


class GgufWeights:
    """The tensors of one GGUF model file by GGUF name, dequantised to float32 one at a time on demand."""

    def __init__(self, file: str | Path) -> None:
        import gguf

        self.file = Path(file)
        reader = gguf.GGUFReader(self.file, "r")
        arch_field = reader.fields.get("general.architecture")
        if arch_field is None:
            raise UserError(f"{self.file} has no general.architecture",
                            hint="verify a GGUF model file written by sc2tune export")
        arch_name = str(arch_field.contents())
        arches = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
        if arch_name not in arches:
            raise UserError(f"{self.file}: unknown general.architecture '{arch_name}'",
                            hint="verify a GGUF file written by sc2tune export")
        blocks = int(reader.fields[f"{arch_name}.block_count"].contents())
        self.names = gguf.get_tensor_name_map(arches[arch_name], blocks)  #: Hugging Face -> GGUF tensor names
        self.tensors: dict[str, Any] = {t.name: t for t in reader.tensors}

    def types(self) -> dict[str, int]:
        """Tensor count per GGUF type name, e.g. ``{"F16": 24, "F32": 49}``."""
        return dict(sorted(Counter(t.tensor_type.name for t in self.tensors.values()).items()))

    def array(self, name: str) -> np.ndarray:
        """Tensor ``name`` as float32 in (rows, columns) order: the values llama.cpp multiplies with."""
        import numpy as np
        from gguf import quants

        tensor = self.tensors[name]
        values = quants.dequantize(tensor.data, tensor.tensor_type)
        return np.asarray(values, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))


def load_file_weights(model: Any, weights: GgufWeights) -> Any:
    """Replace every parameter of the float32 transformers ``model`` (a PEFT model is unloaded to its base
    first, its LoRA layers dropped) by the file's value, in place, one tensor at a time; returns the plain model.

    No second copy of the model is made: the reference model becomes the file's weights computed by
    transformers. Every parameter must have its tensor (a tied head shares ``token_embd``), every tensor of the
    file must be used, and shapes must agree; otherwise a RuntimeError (the file is not this model's export).
    """
    import torch
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.unload()  # the base model without LoRA layers; its weights are replaced below
    embeddings = model.get_input_embeddings().weight
    used: set[str] = set()
    with torch.no_grad():
        for hf_name, param in list(model.named_parameters(remove_duplicate=False)):
            name = weights.names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise RuntimeError(f"parameter {hf_name} has no GGUF name")
            if name not in weights.tensors:
                if name == "output.weight" and param is embeddings:
                    continue  # tied head: llama.cpp reuses token_embd, as the model does
                raise RuntimeError(f"{weights.file} has no tensor {name} for parameter {hf_name}")
            value = torch.from_numpy(weights.array(name).copy())
            if tuple(value.shape) != tuple(param.shape) or param.dtype != torch.float32:
                raise RuntimeError(f"{hf_name}: the model holds {param.dtype} {tuple(param.shape)}, "
                                   f"{weights.file} has {name} {tuple(value.shape)}")
            if name == "output.weight" and param is embeddings:
                model.get_output_embeddings().weight = torch.nn.Parameter(value)  # the export untied the head
                model.config.tie_word_embeddings = False
            else:
                param.copy_(value)
            used.add(name)
    unused = sorted(set(weights.tensors) - used)
    if unused:
        raise RuntimeError(f"{weights.file}: tensors {unused[:5]} match no parameter of the model")
    return model.eval()
