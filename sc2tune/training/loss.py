"""Causal-LM loss without materialising ``batch x length x vocab`` logits.

With StarCoder2's 49152-token vocabulary the output layer and its cross-entropy dominate a small model's
step. The usual path computes ``logits = H W^T`` for every position (prompt and padding included), keeps
them for backward, then takes the log-softmax. Here:

1. Shift: position ``t`` predicts ``labels[t + 1]``; keep only positions whose target is trained
   (``!= -100``): ``h`` (N x d) and ``y`` (N).
2. In chunks of ``c`` rows: ``z = h_c W^T + b`` (float32), ``p = softmax(z)`` (in place, row by row),
   ``loss_c = -sum(log p[y])`` (rows whose ``p[y]`` underflows recompute ``logsumexp(z) - z[y]``) and, in
   the same pass, the gradients ``dz = p - onehot(y)``, ``dh_c = dz W`` and ``dW += dz^T h_c``
   (``db += sum(dz)``) — only for the inputs that need them (a frozen, tied ``lm_head`` under LoRA needs none).
3. Backward multiplies the stored gradients by the incoming scalar.

Peak extra memory is one float32 ``c x vocab`` block (allocated once, reused by every chunk, all the
softmax work done in place in it) instead of ``B x L x vocab``, and no logits are recomputed.
The result equals ``F.cross_entropy(H W^T, y, reduction="sum")`` (value and gradients).
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100


_TINY = 1e-30  # below this a float32 probability has lost precision (and underflows to 0 near 1e-45)


def _exact_loss(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """sum_i logsumexp(z_i) - z_i[y_i] of a few rows, recomputing their logits (float32)."""
    z = torch.nn.functional.linear(h.to(weight.dtype), weight, bias).float()
    return (torch.logsumexp(z, dim=-1) - z.gather(1, y[:, None]).squeeze(1)).sum()


class _LinearCrossEntropySum(torch.autograd.Function):
    """sum_i CE(h_i W^T + b, y_i), gradients computed chunk by chunk during the forward pass."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size):  # type: ignore[override]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        rows = min(chunk_size, hidden.shape[0])
        # One (c, V) float32 buffer reused by every chunk (a fresh one per chunk costs page faults on CPU);
        # everything below works in place in it.
        buffer = torch.empty((rows, weight.shape[0]), dtype=torch.float32, device=hidden.device)
        low = None if weight.dtype == torch.float32 else torch.empty_like(buffer, dtype=weight.dtype)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size]
            y = targets[start:start + chunk_size]
            z = buffer[:h.shape[0]]
            out = z if low is None else low[:h.shape[0]]
            if bias is None:  # = F.linear(h, weight, bias), in weight's dtype, written into the buffer
                torch.mm(h.to(weight.dtype), weight.t(), out=out)
            else:
                torch.addmm(bias, h.to(weight.dtype), weight.t(), out=out)
            if low is not None:
                z.copy_(out)
            # Row-wise fused softmax in place (each 49152-float row stays in cache through max, exp-sum and
            # scale, instead of five passes over the whole block); loss_i = -log softmax(z_i)[y_i].
            torch.softmax(z, dim=-1, out=z)
            p_target = z.gather(1, y[:, None]).squeeze(1)
            underflow = p_target < _TINY
            if bool(underflow.any()):  # a target so unlikely its probability underflows: exact logsumexp
                total += _exact_loss(h[underflow], weight, bias, y[underflow])
                p_target = p_target[~underflow]
            total -= p_target.log().sum()
            if need_h or need_w or need_b:
                dz = z  # softmax
                dz[torch.arange(y.shape[0], device=y.device), y] -= 1.0
                if need_h:
                    grad_h[start:start + chunk_size] = (dz.to(weight.dtype) @ weight).to(hidden.dtype)
                if need_w:
                    grad_w.addmm_(dz.t(), h.float())
                if need_b:
                    grad_b += dz.sum(0)
        ctx.save_for_backward(
            grad_h if need_h else None,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
        )
        return total

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        scale = grad_output.to(torch.float32)
        return (
            None if grad_h is None else grad_h * scale.to(grad_h.dtype),
            None if grad_w is None else grad_w * scale.to(grad_w.dtype),
            None if grad_b is None else grad_b * scale.to(grad_b.dtype),
            None,
            None,
        )


def linear_cross_entropy_sum(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """``sum_i CE(hidden_i @ weight^T + bias, targets_i)`` in float32, chunked over rows (see module doc).

    ``hidden`` is (N, d), ``weight`` (V, d), ``targets`` (N,) with no ignored entries.
    """
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0 + weight.sum() * 0.0
    return _LinearCrossEntropySum.apply(hidden, weight, bias, targets, chunk_size)


def shifted_trained_positions(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states that predict a trained token, and those tokens: ``h[:, :-1][m]``, ``y[:, 1:][m]``."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    return hidden[:, :-1][mask], targets[mask]


def output_layer(model: nn.Module) -> nn.Linear | None:
    """The plain ``nn.Linear`` output head of a causal LM, or None when it is wrapped/quantised."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return head if type(head) is nn.Linear else None
