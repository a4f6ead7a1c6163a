"""The 4-bit round trip a QLoRA adapter was trained against.

During QLoRA training each Linear weight ``W`` of the decoder (not the output head, not a
classification ``score`` head) is stored as 4-bit codes plus per-block scales and used as
``dequant(quant(W))``. ``quant`` splits ``W`` into blocks of 64 values, stores each block's absolute
maximum (itself 8-bit quantised with double quantisation) and the nearest NF4 (or FP4) code of each
value divided by that maximum; ``dequant`` multiplies back. The adapter learnt the update that suits
``W_q = dequant(quant(W))``, not ``W``, so merging into ``W_q`` reproduces the trained model.

Computed on the CPU with bitsandbytes, with the same quant type, block size and double-quant
setting as training, from ``W`` in the dtype the training run loaded it in.
"""

from __future__ import annotations

import torch

from sc2tune.errors import UserError
from sc2tune.recipe import QuantSpec

#: bitsandbytes' 4-bit block size, the one transformers quantises a QLoRA base with.
BLOCKSIZE = 64


def nf4_round_trip(weight: torch.Tensor, quant: QuantSpec, dtype: str | None = None) -> torch.Tensor:
    """``dequant(quant(weight))`` with bitsandbytes (4-bit codes never leave this function), from ``weight`` in
    ``dtype`` (the dtype the run loaded its base in; None: the weight's own)."""
    try:
        import bitsandbytes.functional as bnbf
    except ImportError as err:  # pragma: no cover - bitsandbytes is a dependency
        raise UserError(f"merging a QLoRA adapter into its 4-bit round trip needs bitsandbytes ({err})",
                        hint="pip install bitsandbytes, or pass --merge-into original") from None
    source = weight.to("cpu", getattr(torch, dtype) if dtype else weight.dtype).contiguous()
    codes, state = bnbf.quantize_4bit(
        source, blocksize=BLOCKSIZE, compress_statistics=quant.double_quant, quant_type=quant.quant_type,
    )
    return bnbf.dequantize_4bit(codes, state).reshape(weight.shape)
