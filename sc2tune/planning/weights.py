"""Bytes of a model's weights in each load mode, counted parameter by parameter on the meta model.

Rules (bitsandbytes through transformers, as ``sc2tune.modeling.load_model`` loads them):

* 16/32-bit: every parameter and buffer at its dtype's size (tied weights counted once).
* Quantised modes convert every ``nn.Linear`` (and GPT-2 style ``Conv1D``) except the skipped ones: by
  default the output embeddings (``lm_head``), tied weights and the last parameter's module
  (transformers' ``get_keys_to_not_convert``); a classification model skips ``score`` instead (sc2tune passes
  ``llm_int8_skip_modules=["score"]``). Embeddings, norms, biases and skipped heads stay in the load dtype.
* int8 (LLM.int8): 1 byte per weight element, plus one fp32 scale per output row (``SCB``).
* 4-bit (NF4/FP4): 2 elements per byte (``ceil(n/2)``, uint8 storage). Quantisation constants, per tensor of
  ``n`` elements in ``b = ceil(n/64)`` blocks of 64:
  without double quant an fp32 absmax per block (``4b`` bytes); with double quant a uint8 absmax per block
  (``b``) plus the second level, an fp32 absmax per 256 first-level blocks (``4 ceil(b/256)``) and an fp32
  offset (4) and its 256-entry fp32 code table (1 KiB); each tensor also keeps its 16-entry fp32 code
  table (64). (bitsandbytes gives every tensor its own copies of the code tables; checked on CPU.)

``footprint_bytes`` is what ``PreTrainedModel.get_memory_footprint()`` reports (parameters + buffers; it
does not see the quantisation constants); ``resident_bytes`` adds them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from sc2tune.architectures import ModelLayout

if TYPE_CHECKING:
    import torch

LoadMode = Literal["fp32", "bf16", "fp16", "int8", "nf4", "fp4"]

#: bitsandbytes block sizes: 4-bit weights, and the second (double-quant) level over the absmax values.
BLOCKSIZE_4BIT = 64
BLOCKSIZE_NESTED = 256
CODE_4BIT_BYTES = 16 * 4
CODE_NESTED_BYTES = 256 * 4

_DTYPE_OF_MODE = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
#: Bytes per element of the floating dtypes a model loads in.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class WeightBreakdown:
    """Weight memory of one model in one load mode (bytes, and parameter counts)."""

    mode: str
    quantized_bytes: int  #: packed int8 / 4-bit linear weights
    unquantized_bytes: int  #: parameters kept in the load dtype: embeddings, heads, norms, biases
    buffer_bytes: int  #: registered buffers (rotary inv_freq, masks)
    quant_state_bytes: int  #: absmax / scales / code tables, not seen by get_memory_footprint
    quantized_params: int
    unquantized_params: int
    skipped_linears: tuple[str, ...]  #: linear layers left unquantised in this mode

    @property
    def footprint_bytes(self) -> int:
        """Parameters + buffers: comparable to transformers' ``get_memory_footprint()``."""
        return self.quantized_bytes + self.unquantized_bytes + self.buffer_bytes

    @property
    def resident_bytes(self) -> int:
        """Everything the weights occupy on the device, quantisation constants included."""
        return self.footprint_bytes + self.quant_state_bytes

    @property
    def params(self) -> int:
        return self.quantized_params + self.unquantized_params


def nf4_state_bytes(numel: int, *, double_quant: bool) -> int:
    """Quantisation constants of one 4-bit tensor of ``numel`` elements (see the module docstring)."""
    blocks = math.ceil(numel / BLOCKSIZE_4BIT)
    if double_quant:
        return blocks + 4 * math.ceil(blocks / BLOCKSIZE_NESTED) + 4 + CODE_NESTED_BYTES + CODE_4BIT_BYTES
    return 4 * blocks + CODE_4BIT_BYTES


#: transformers' ``should_convert_module`` boundary: a pattern matches up to a module boundary.
_BOUNDARY = r"(?:(?<=\.)|(?=\.|$))"


def _converted(name: str, skip: list[str]) -> bool:
    """transformers' ``should_convert_module``: a skip key matches from the start up to a module boundary
    (also as a regex) or as a suffix of the module name."""
    return not any(re.match(rf"(?:{key}){_BOUNDARY}", name) or name.endswith(key) for key in skip)


def weight_breakdown(
    layout: ModelLayout,
    mode: LoadMode,
    *,
    dtype: str | torch.dtype = "bfloat16",
    skip_modules: list[str] | None = None,
    double_quant: bool = True,
    upcast_unquantized: bool = False,
) -> WeightBreakdown:
    """Count the weight bytes of the model laid out as ``layout`` loaded in ``mode``.

    ``dtype`` is the dtype of everything left unquantised in int8/4-bit modes (16/32-bit modes use their
    own). ``skip_modules`` follows ``llm_int8_skip_modules``: None = transformers' defaults.
    ``upcast_unquantized`` counts unquantised 16-bit parameters as fp32, which is what PEFT's
    ``prepare_model_for_kbit_training`` does to them before QLoRA training.
    """
    quantized_mode = mode in ("int8", "nf4", "fp4")
    base_dtype = str(dtype).removeprefix("torch.") if quantized_mode else _DTYPE_OF_MODE[mode]
    keep_fp32 = list(layout.keep_in_fp32)
    if skip_modules is None:  # transformers' defaults (get_keys_to_not_convert): output head, tied weights, ...
        if layout.default_skip is None:
            raise TypeError(f"{layout.class_name} is not a transformers model: give skip_modules")
        skip_modules = list(layout.default_skip)
    skip = list(skip_modules) + keep_fp32
    q_bytes = u_bytes = state = q_params = u_params = 0
    skipped: list[str] = []
    for module in layout.modules:
        name = module.name
        quantize = quantized_mode and module.quantizable and _converted(name, skip)
        if quantized_mode and module.quantizable and not quantize:
            skipped.append(name)
        for param in module.params:
            if param.shared_with is not None:
                continue
            n = param.numel
            if quantize and param.name == "weight":
                q_params += n
                if mode == "int8":
                    q_bytes += n
                    state += 4 * param.shape[0]  # SCB: one fp32 scale per output row
                else:
                    q_bytes += math.ceil(n / 2)
                    state += nf4_state_bytes(n, double_quant=double_quant)
                continue
            u_params += n
            fp32 = any(not _converted(name, [key]) for key in keep_fp32)
            if not param.floating:
                size = param.element_size
            elif fp32 or (upcast_unquantized and quantized_mode):
                size = 4
            else:
                size = DTYPE_BYTES[base_dtype]
            u_bytes += n * size
    return WeightBreakdown(mode, q_bytes, u_bytes, layout.buffer_bytes(), state, q_params, u_params,
                           tuple(skipped))
