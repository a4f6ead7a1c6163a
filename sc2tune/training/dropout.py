"""LoRA dropout for CPU training that draws ~p x n random numbers instead of n.

PEFT applies ``nn.Dropout(p)`` to the input of every adapted layer: one Bernoulli draw per element,
which on a CPU costs about as much as the layer's own matrix product for a small model. The dropped
positions of an i.i.d. Bernoulli(p) sequence are equally the partial sums of i.i.d. Geometric(p) gaps
(support 1, 2, ...; ``P(gap = k) = (1 - p)^(k - 1) p``), so drawing only the gaps gives the same
distribution of masks with about ``p n`` draws::

    dropped = {g_1 - 1, g_1 + g_2 - 1, ...} ∩ [0, n)        out = x / (1 - p),  out[dropped] = 0

Backward is the same map on the gradient (``grad / (1 - p)``, zero at the dropped positions); only the
dropped positions (int64, about ``8 p`` bytes per element) are kept for it, not a mask. Random numbers
come from torch's default generator, so a seeded run is reproducible and a resumed run restores them
with the checkpoint's RNG state. Used on CPU unless ``train.lora_dropout_impl`` is ``peft``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dropped_positions(n: int, p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """Flat indices in ``[0, n)`` of an i.i.d. Bernoulli(``p``) selection (see module doc), sorted."""
    found: list[torch.Tensor] = []
    offset = 0
    while True:
        remaining = n - offset
        mean = remaining * p
        count = int(mean + 6.0 * math.sqrt(mean) + 16)  # enough to reach n nearly always; else draw more
        gaps = torch.empty(count, dtype=torch.int64, device=device).geometric_(p)
        ends = gaps.cumsum_(0).add_(offset)  # 1-based positions of the dropped elements
        inside = ends[ends <= n]
        found.append(inside - 1)
        if int(ends[-1]) >= n:
            break
        offset = int(ends[-1])
    return found[0] if len(found) == 1 else torch.cat(found)


class _SparseDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        scale = 1.0 / (1.0 - p)
        positions = dropped_positions(x.numel(), p, x.device)
        out = x.contiguous() * scale
        out.view(-1)[positions] = 0
        ctx.save_for_backward(positions)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (positions,) = ctx.saved_tensors
        out = grad.contiguous() * ctx.scale
        out.view(-1)[positions] = 0
        return out, None


class SparseDropout(nn.Dropout):
    """``nn.Dropout`` with the same distribution, drawing only the dropped positions (see module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p >= 1.0:
            return x * 0.0
        return _SparseDropout.apply(x, self.p)


def use_sparse_lora_dropout(model: nn.Module) -> int:
    """Replace each plain ``nn.Dropout`` of the model's LoRA layers (PEFT's ``lora_dropout``) by
    :class:`SparseDropout` with the same ``p``; returns how many were replaced."""
    replaced = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout and dropout.p > 0:
                dropouts[name] = SparseDropout(dropout.p)
                replaced += 1
    return replaced
