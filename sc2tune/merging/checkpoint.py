"""The base checkpoint, read lazily: where it is, which tensors each shard holds, and the model's layout.

Nothing here loads a whole shard. :meth:`BaseCheckpoint.read` opens the shard with ``safe_open``, copies
one tensor out and closes the file again, so memory mapped for reading never outlives one tensor.
:func:`skeleton` builds the model on the ``meta`` device (no memory) to learn parameter names, shapes,
which modules are Linear layers and whether the output embedding is tied to the input embedding.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, PretrainedConfig

from sc2tune.errors import UserError
from sc2tune.merging.writer import DTYPE_NAMES, OutTensor
from sc2tune.modeling import ModelSource, load_config

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"

SAFETENSORS_DTYPES: dict[str, torch.dtype] = {name: dtype for dtype, name in DTYPE_NAMES.items()}


@dataclass(frozen=True)
class TensorInfo(OutTensor):
    """Name, shape, dtype and shard file of one tensor of the base checkpoint."""

    file: Path


@dataclass
class BaseCheckpoint:
    """A safetensors checkpoint folder (sharded with an index, or a single ``model.safetensors``)."""

    path: Path
    config: PretrainedConfig
    tensors: dict[str, TensorInfo]
    source: ModelSource  #: how the base is loaded (its head, whether its own code may run)

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype holding most of the parameters."""
        counts: dict[torch.dtype, int] = {}
        for info in self.tensors.values():
            if info.dtype.is_floating_point:
                counts[info.dtype] = counts.get(info.dtype, 0) + math.prod(info.shape)
        return max(counts, key=counts.__getitem__) if counts else torch.float32

    def read(self, name: str) -> torch.Tensor:
        """One tensor, copied out of its shard (the shard is opened and closed around the read)."""
        from safetensors import safe_open

        info = self.tensors[name]
        with safe_open(str(info.file), framework="pt") as handle:
            return handle.get_tensor(name)


@dataclass(frozen=True)
class Skeleton:
    """Layout of the model to write, learnt from a meta-device instance."""

    params: dict[str, tuple[int, ...]]  # every weight to write, in model order (tied duplicates once)
    linear_modules: frozenset[str]  # names of nn.Linear modules
    input_embedding: str  # module name, e.g. model.embed_tokens
    output_embedding: str | None  # module name, e.g. lm_head (None for classifiers)
    tied: bool  # output embedding shares the input embedding's weight


def open_checkpoint(source: ModelSource) -> BaseCheckpoint:
    """List the tensors of ``source``'s checkpoint folder from the safetensors headers (no tensor data read).

    Its config.json is read by :func:`sc2tune.modeling.load_config`: a ``model_type`` only the model's own code
    (``auto_map``) defines needs :attr:`~sc2tune.modeling.ModelSource.trust_remote_code`; a built-in one (e.g.
    ``starcoder2``) without it is read by transformers' own config class (the folder's code unused and unrun,
    with a warning): the merge then follows transformers' class, not the folder's code.
    """
    path = Path(source.name_or_path)
    config = load_config(source)
    if getattr(config, "quantization_config", None):
        raise UserError(
            f"{path} is a quantised checkpoint (config.json has a quantization_config)",
            hint="merging into 4-bit/8-bit weights loses the update; pass --base with the original "
            "16/32-bit checkpoint",
        )
    tensors = checkpoint_tensors(path)
    if any(k.endswith((".absmax", ".quant_map", ".SCB")) or "quant_state" in k for k in tensors):
        raise UserError(f"{path} holds bitsandbytes-quantised weights",
                        hint="pass --base with the original 16/32-bit checkpoint")
    return BaseCheckpoint(path, config, tensors, source)


def checkpoint_tensors(path: Path) -> dict[str, TensorInfo]:
    """Every tensor of the safetensors checkpoint folder ``path`` (the shards its index names, or
    ``model.safetensors``), read from the headers alone."""
    from safetensors import safe_open

    index = path / INDEX_NAME
    if index.is_file():
        try:
            weight_map: dict[str, str] = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as err:
            raise UserError(f"{index}: not a safetensors index ({err})") from None
        files = sorted({path / f for f in weight_map.values()})
    elif (path / SINGLE_NAME).is_file():
        files = [path / SINGLE_NAME]
    else:
        raise UserError(f"{path} has no {SINGLE_NAME} or {INDEX_NAME}",
                        hint="the streaming merge reads safetensors checkpoints; convert .bin weights first")
    tensors: dict[str, TensorInfo] = {}
    for file in files:
        if not file.is_file():
            raise UserError(f"shard {file.name} named in {INDEX_NAME} is missing from {path}")
        try:
            with safe_open(str(file), framework="pt") as handle:
                for key in sorted(handle.keys()):
                    piece = handle.get_slice(key)
                    dtype = SAFETENSORS_DTYPES.get(piece.get_dtype())
                    if dtype is None:
                        raise UserError(f"{file}: tensor '{key}' has unsupported dtype {piece.get_dtype()}")
                    tensors[key] = TensorInfo(key, tuple(piece.get_shape()), dtype, file)
        except UserError:
            raise
        except Exception as err:  # truncated header, not a safetensors file
            raise UserError(f"{file}: cannot read the safetensors header ({err})") from None
    return tensors


def skeleton(config: PretrainedConfig, *, classifier: bool, trust_remote_code: bool = False) -> Skeleton:
    """Instantiate the model on the meta device and read its layout (costs no memory); a model class from the
    model's own code (``auto_map``) only with ``trust_remote_code``."""
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    try:
        with torch.device("meta"):
            model = loader.from_config(config, trust_remote_code=trust_remote_code)
    except (ValueError, KeyError) as err:
        raise UserError(f"transformers cannot build a {loader.__name__[4:]} for this config ({err})") from None
    names = {id(m): n for n, m in model.named_modules()}
    inp = model.get_input_embeddings()
    out = model.get_output_embeddings() if not classifier else None
    tied = out is not None and out.weight is inp.weight
    params: dict[str, tuple[int, ...]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tied and name == f"{names[id(out)]}.weight":
            continue
        params[name] = tuple(tensor.shape)
    linear = frozenset(n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear))
    return Skeleton(params, linear, names[id(inp)], names[id(out)] if out is not None else None, tied)
