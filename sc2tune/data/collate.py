"""Batch collators: the row and batch formats the trainer relies on.

Causal, packing off (dynamic padding to the longest row of the batch, right side)::

    input_ids       (B, L)  pad = tokenizer.pad_token_id (<fim_pad>, never eos)
    attention_mask  (B, L)  1 on real tokens, 0 on pad
    labels          (B, L)  -100 on pad

Causal, packing on: ``input_ids``, ``labels`` and ``position_ids`` (B, L); the pad tail of a row is its
own segment with positions 0, 1, ...; NO attention_mask, so transformers builds the per-document
block-diagonal causal mask from the restarting position ids (sdpa/eager) or runs varlen flash-attention.

Classification: ``input_ids`` and ``attention_mask`` (B, L) padded with the pad id, ``labels`` (B,) int64.

Columns other than these (e.g. ``length``) are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sc2tune.data.packing import IGNORE


@dataclass(frozen=True)
class CausalCollator:
    """Collator for instruct and fim rows (see module doc)."""

    pad_id: int
    packed: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        labels = np.full((n, width), IGNORE, dtype=np.int64)
        extra = np.zeros((n, width), dtype=np.int64)  # position ids (packed) or attention mask
        for i, row in enumerate(rows):
            k = len(row["input_ids"])
            ids[i, :k] = row["input_ids"]
            labels[i, :k] = row["labels"]
            if self.packed:
                extra[i, :k] = row["position_ids"]
                extra[i, k:] = np.arange(width - k)
            else:
                extra[i, :k] = 1
        out = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
        out["position_ids" if self.packed else "attention_mask"] = torch.from_numpy(extra)
        return out


@dataclass(frozen=True)
class ClassifyCollator:
    """Collator for classification rows (see module doc)."""

    pad_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = CausalCollator(self.pad_id, pad_to_multiple_of=self.pad_to_multiple_of)(rows)  # ids, attention mask
        out["labels"] = torch.tensor([int(r["labels"]) for r in rows], dtype=torch.int64)  # one per row
        return out
