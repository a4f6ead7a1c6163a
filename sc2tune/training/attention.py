"""Per-document attention for packed and right-padded training batches, without a dense mask (CPU SDPA).

With ``sdpa``, transformers turns a packed row (position ids restarting at 0 at each document) into a
``(B, 1, L, L)`` block-diagonal mask and computes attention over the whole ``L x L`` square. Here each
document ``[s, e)`` of a row (a run of position ids increasing by one) is attended on its own::

    out[b, :, s:e] = softmax(q[b, :, s:e] k[b, :, s:e]^T * scale + causal (and sliding-window) mask) v[b, :, s:e]

which is exactly what the block-diagonal mask selects, at the cost of ``sum_i l_i^2`` instead of ``L^2``
and with the fast mask-free causal kernel. A right-padded row (2-D attention mask ``1..1 0..0``) is one
document ``[0, n)``; its pad positions get zeros (they are never trained, and under a causal mask no real
token attends to a later pad). Any other mask (left padding, a KV cache) is built by transformers' own
``sdpa_mask`` and handed to its ``sdpa_attention_forward`` unchanged.

Registered under :data:`NAME` in transformers' attention and mask interfaces; :func:`use_packed_attention`
switches a model's ``sdpa`` to it for the duration of a ``with`` block (the trainer does this around
training and evaluation on CPU) and restores ``sdpa`` afterwards, so generation is untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F  # noqa: N812
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "sc2tune_packed_sdpa"

Segments = list[list[tuple[int, int]]]
_cache: list = [None, None]  # (position_ids tensor, its segments): computed once per forward, not per layer


def document_segments(position_ids: torch.Tensor) -> Segments:
    """Per row, the ``[start, end)`` spans over which the position ids increase by one."""
    ids = position_ids.detach().cpu()
    starts = torch.ones_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, 1:] != ids[:, :-1] + 1
    length = ids.shape[1]
    out = []
    for row in starts:
        s = torch.nonzero(row).flatten().tolist()
        out.append(list(zip(s, [*s[1:], length], strict=True)))
    return out


def _segments(position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, batch: int, length: int
              ) -> Segments:
    if attention_mask is not None:  # right-padded 2-D mask: one document per row, pads left out
        return [[(0, int(n))] if n else [] for n in attention_mask.sum(-1).tolist()]
    if position_ids is None:
        return [[(0, length)] for _ in range(batch)]
    if _cache[0] is position_ids:
        return _cache[1]
    segments = document_segments(position_ids.expand(batch, -1))
    _cache[0], _cache[1] = position_ids, segments
    return segments


def packed_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          sliding_window: int | None = None, position_ids: torch.Tensor | None = None,
                          **kwargs) -> tuple[torch.Tensor, None]:
    """Attention function (transformers' interface): (B, H, L, D) inputs -> (B, L, H, D) output, see module doc."""
    if attention_mask is not None and attention_mask.dim() == 4:  # built by sdpa_mask: not our case
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, length, _ = query.shape
    gqa = key.shape[1] != heads
    rows = []
    # One split per tensor (its backward concatenates the pieces' gradients once) rather than a slice per
    # document (each slice's backward would write a zero-filled copy of the whole tensor).
    row_q, row_k, row_v = (t.split(1, dim=0) for t in (query, key, value))
    for b, spans in enumerate(_segments(position_ids, attention_mask, batch, length)):
        covered = spans[-1][1] if spans else 0
        sizes = [end - start for start, end in spans] + ([length - covered] if covered < length else [])
        qs, ks, vs = (t[b].split(sizes, dim=2) for t in (row_q, row_k, row_v))
        parts = []
        for i, (start, end) in enumerate(spans):
            n = end - start
            mask = None
            if sliding_window is not None and n > sliding_window:  # keys within the window only
                j = torch.arange(n, device=query.device)
                mask = (j[None, :] <= j[:, None]) & (j[:, None] - j[None, :] < sliding_window)
            parts.append(F.scaled_dot_product_attention(
                qs[i], ks[i], vs[i], attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling,
                enable_gqa=gqa))
        if covered < length:  # pad tail of a right-padded row
            parts.append(query.new_zeros(1, heads, length - covered, value.shape[-1]))
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    out = torch.cat(rows, dim=0) if batch > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def packed_sdpa_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                     mask_function=None, attention_mask: torch.Tensor | None = None, **kwargs):
    """Mask interface: None (packed or unpadded: documents come from the position ids), the 2-D mask of a
    right-padded batch, or transformers' ``sdpa_mask`` for anything else (left padding, a cache)."""
    plain = q_length == kv_length and not q_offset and not kv_offset
    if plain and attention_mask is None:
        return None
    if plain and attention_mask.dim() == 2 and attention_mask.shape[1] == kv_length:
        am = attention_mask.bool()
        if not (am[:, 1:] & ~am[:, :-1]).any():  # every row is 1..1 0..0
            return None if am.all() else am
    return sdpa_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask, **kwargs)


AttentionInterface.register(NAME, packed_sdpa_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, packed_sdpa_mask)


@contextlib.contextmanager
def _switched(config, current: str, other: str) -> Iterator[bool]:
    """Within the block a model whose config says ``current`` uses ``other`` (the segment cache cleared on the
    way in and out); yields whether it switched."""
    if getattr(config, "_attn_implementation", None) != current:
        yield False
        return
    config._attn_implementation = other
    _cache[0] = _cache[1] = None
    try:
        yield True
    finally:
        config._attn_implementation = current
        _cache[0] = _cache[1] = None


def use_packed_attention(config) -> contextlib.AbstractContextManager[bool]:
    """Within the block, a model whose config says ``sdpa`` uses :func:`packed_sdpa_attention`; yields whether it did."""
    return _switched(config, "sdpa", NAME)


def plain_attention(config) -> contextlib.AbstractContextManager[bool]:
    """Within the block, plain ``sdpa`` again inside a :func:`use_packed_attention` block: generation (the
    in-training FIM probe) runs with a KV cache and left padding, where position ids do not mark documents."""
    return _switched(config, NAME, "sdpa")
