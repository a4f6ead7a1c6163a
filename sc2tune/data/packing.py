"""Token sequences as flat arrays, best-fit-decreasing packing, and rows as an Arrow-backed dataset.

A :class:`TokenSeqs` holds N variable-length sequences as one flat ``ids`` array, an aligned ``labels``
array (-100 = not trained) and ``offsets`` (length N+1): sequence i is ``ids[offsets[i]:offsets[i+1]]``.

Labels are aligned with the input ids and shifted in the loss (sc2tune.training.loss and transformers
alike): ``labels[t]`` is the target of the prediction made at position ``t - 1``. The first token of a
sequence has no earlier token in its own document, so **the first label of every sequence is -100**
(enforced by :class:`TokenSeqs` whatever its producer wrote, and again by :func:`pack`)::

    input_ids  a0 a1 a2 b0 b1 c0 c1        (three documents packed in one row)
    labels     -100 a1 a2 -100 b1 -100 c1

Without it, ``b0`` would be a target predicted from ``a2``, the last token of another document
(transformers' ``DataCollatorWithFlattening`` applies the same rule). In an unpacked row, or for the
first document of a packed row, the shift drops ``labels[0]`` anyway; masking it there too keeps the
``trained_tokens`` count equal to the number of targets the loss really sees. With this rule the loss of
a packed row is the sum of the losses of its documents computed one at a time.

Packing (``data.packing``) places sequences into rows of at most ``max_length`` tokens by best-fit
decreasing: sequences sorted longest first (ties in a seeded random order), each put into the open row
with the least room that still fits it, else a new row. A packed row is the concatenation of its
sequences, and its ``position_ids`` restart at 0 at every sequence start::

    input_ids    a0 a1 a2 b0 b1 c0 c1 c2 c3
    position_ids  0  1  2  0  1  0  1  2  3

transformers derives the block-diagonal causal mask (token t attends to s iff s <= t and both are in
the same sequence) from those restarting position ids when no attention_mask is passed, so packed
sequences never see each other.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa

IGNORE = -100


@dataclass(frozen=True)
class TokenSeqs:
    """N token sequences in flat arrays (see module doc)."""

    ids: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray

    def __post_init__(self) -> None:
        starts = document_starts(self.offsets)
        if len(starts) and (self.labels[starts] != IGNORE).any():  # copy: the caller's array stays as it was
            labels = np.array(self.labels, copy=True)
            labels[starts] = IGNORE
            object.__setattr__(self, "labels", labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @staticmethod
    def from_lists(ids: list[np.ndarray], labels: list[np.ndarray]) -> TokenSeqs:
        """Concatenate per-sequence arrays."""
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        cat = (lambda xs: np.concatenate(xs).astype(np.int32)) if ids else (lambda xs: np.zeros(0, np.int32))
        flat_labels = cat(labels)
        flat_labels[document_starts(offsets)] = IGNORE  # an array nobody else holds: masked in place, no copy
        return TokenSeqs(cat(ids), flat_labels, offsets)


def document_starts(offsets: np.ndarray) -> np.ndarray:
    """Flat positions of the first token of every non-empty sequence (``offsets[i]`` where length > 0)."""
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    return starts[np.diff(offsets) > 0]


def best_fit_decreasing(lengths: np.ndarray, capacity: int, seed: int) -> list[list[int]]:
    """Group sequence indices into bins whose total length is at most ``capacity``.

    Longest first (equal lengths in a random order drawn from ``seed``); each goes to the bin with the
    smallest remaining room that fits it, or opens a new bin. Bins come out in creation order.
    """
    n = len(lengths)
    if n == 0:
        return []
    if int(lengths.max()) > capacity:
        raise ValueError(f"a sequence of {int(lengths.max())} tokens exceeds the row size {capacity}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    order = order[np.argsort(-lengths[order], kind="stable")]
    smallest = int(lengths.min())
    bins: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (remaining capacity, bin index), sorted ascending
    for index in order.tolist():
        size = int(lengths[index])
        pos = bisect.bisect_left(room, (size, -1))
        if pos < len(room):
            left, b = room.pop(pos)
            bins[b].append(index)
            left -= size
        else:
            b = len(bins)
            bins.append([index])
            left = capacity - size
        if left >= smallest:  # rooms smaller than every sequence can never be used again
            bisect.insort(room, (left, b))
    return bins


def _gather(seqs: TokenSeqs, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate sequences in ``order``: (token gather index, per-token position in its sequence)."""
    lengths = seqs.lengths[order]
    total = int(lengths.sum())
    starts_out = np.cumsum(lengths) - lengths  # where each sequence starts in the output
    shift = np.repeat(seqs.offsets[:-1][order] - starts_out, lengths)
    index = np.arange(total, dtype=np.int64) + shift
    position = np.arange(total, dtype=np.int64) - np.repeat(starts_out, lengths)
    return index, position


def _list_array(values: np.ndarray, offsets: np.ndarray) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values, pa.int32()))


def pack(seqs: TokenSeqs, max_length: int, seed: int) -> tuple[datasets.Dataset, int]:
    """Pack sequences into rows of at most ``max_length`` tokens; returns (dataset, number of rows).

    Columns: ``input_ids``, ``labels``, ``position_ids`` (restarting at 0 at each sequence start).
    Rows are in a seeded random order. Every position whose ``position_ids`` is 0 (a document's first
    token) has label -100, so no document is trained to predict the next one's first token (module doc).
    """
    bins = best_fit_decreasing(seqs.lengths, max_length, seed)
    rng = np.random.default_rng(seed + 1)
    bins = [bins[i] for i in rng.permutation(len(bins))] if bins else []
    order = np.fromiter((i for b in bins for i in b), dtype=np.int64, count=len(seqs))
    index, position = _gather(seqs, order)
    row_lengths = np.fromiter((int(seqs.lengths[b].sum()) for b in bins), dtype=np.int64, count=len(bins))
    row_offsets = np.concatenate([[0], np.cumsum(row_lengths)])
    labels = seqs.labels[index]
    labels[position == 0] = IGNORE  # the packed label rule (module doc), whatever built ``seqs``
    table = pa.table({
        "input_ids": _list_array(seqs.ids[index], row_offsets),
        "labels": _list_array(labels, row_offsets),
        "position_ids": _list_array(position, row_offsets),
    })
    return datasets.Dataset(table), len(bins)


def unpacked(seqs: TokenSeqs) -> datasets.Dataset:
    """One row per sequence: ``input_ids``, ``labels`` and ``length`` (for length-grouped sampling)."""
    table = pa.table({
        "input_ids": _list_array(seqs.ids, seqs.offsets),
        "labels": _list_array(seqs.labels, seqs.offsets),
        "length": pa.array(seqs.lengths, pa.int32()),
    })
    return datasets.Dataset(table)
