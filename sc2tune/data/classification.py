"""Classification examples: text (or a text pair) -> token ids ending in eos, label name -> id.

Layout (the classification head reads the last non-pad token, here always ``<|endoftext|>``):

    single:  tokens(text)[:budget] + [eos]                                   budget = max_length - 1
    pair:    tokens(text)[:ka] + [eos] + tokens(pair)[:kb] + [eos]          budget = max_length - 2

With a pair over budget the longer text is cut first: ka = min(la, max(budget // 2, budget - lb)),
kb = min(lb, budget - ka). ``data.truncation_side`` right keeps the first tokens of a text, left the last.

Labels: the distinct training label values, named by ``str(value)`` and sorted (numerically when every
name is an integer, else alphabetically), get ids 0..K-1. When every label is an integer in
[0, model.num_labels) the ids are the labels themselves. An eval label absent from training is an error.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from sc2tune.data.sources import Records
from sc2tune.data.stats import SplitStats
from sc2tune.errors import DataError
from sc2tune.tokens import encode_texts


def label_name(value: Any) -> str:
    """The name of a label value (bools and integral floats become integers first)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def label_ids_of(names: set[str], column: str, num_labels: int | None) -> dict[int, str]:
    """id2label for the set of training label names (see module doc)."""
    integer = all(n.lstrip("-").isdigit() for n in names)
    if num_labels is not None and integer and all(0 <= int(n) < num_labels for n in names):
        return {i: str(i) for i in range(num_labels)}
    ordered = sorted(names, key=int) if integer else sorted(names)
    if len(ordered) < 2:
        raise DataError(f"data.train: every example has the label {ordered[0]!r} in column '{column}'",
                        hint="classification needs at least two classes")
    if num_labels is not None and len(ordered) != num_labels:
        raise DataError(f"data.train has {len(ordered)} labels ({', '.join(ordered[:20])}) but model.num_labels "
                        f"is {num_labels}", hint="fix model.num_labels or leave it unset to infer it")
    return dict(enumerate(ordered))


def unseen_labels_error(unseen: dict[str, str], id2label: dict[int, str]) -> DataError:
    """The error for eval labels training never saw (``unseen``: name -> where it first appears)."""
    first = ", ".join(f"{n!r} (first at {where})" for n, where in list(unseen.items())[:5])
    return DataError(f"data.eval has label(s) the training data never has: {first}",
                     hint=f"training labels: {', '.join(sorted(id2label.values()))}")


def _cut(ids: list[int], keep: int, side: str) -> list[int]:
    if len(ids) <= keep:
        return ids
    return ids[:keep] if side == "right" else ids[len(ids) - keep:]


def classification_ids(a: list[int], b: list[int] | None, max_length: int, side: str, eos: int
                       ) -> tuple[list[int], int]:
    """Token ids of one example in the layout above, and how many text tokens truncation dropped.

    Training and inference (``sc2tune.generation.classify``) both build inputs here, so the score head
    reads at serving time exactly the token (``<|endoftext|>``) it was trained to read.
    """
    if b is None:
        ids = _cut(a, max_length - 1, side) + [eos]
        return ids, len(a) - (len(ids) - 1)
    budget = max_length - 2
    ka = min(len(a), max(budget // 2, budget - len(b)))
    kb = min(len(b), budget - ka)
    ids = _cut(a, ka, side) + [eos] + _cut(b, kb, side) + [eos]
    return ids, len(a) + len(b) - (len(ids) - 2)


def tokenize_classify(records: Records, tokenizer: PreTrainedTokenizerBase, *, text: str, pair: str | None,
                      label: str, id2label: dict[int, str], max_length: int, side: str
                      ) -> tuple[pa.Table, SplitStats, dict[str, int]]:
    """(rows with input_ids and labels, counts (the split's packing efficiency aside), examples per label name)."""
    label2id = {name: i for i, name in id2label.items()}
    eos = int(tokenizer.eos_token_id)
    a_ids = encode_texts(tokenizer, records.columns[text])
    b_ids = encode_texts(tokenizer, [t or "" for t in records.columns[pair]]) if pair else [None] * len(a_ids)
    built = [classification_ids(a, b, max_length, side, eos) for a, b in zip(a_ids, b_ids, strict=True)]
    rows, cuts = [ids for ids, _ in built], [cut for _, cut in built]
    labels = [label2id[label_name(y)] for y in records.columns[label]]
    table = pa.table({"input_ids": pa.array(rows, pa.list_(pa.int32())), "labels": pa.array(labels, pa.int64())})
    stats = SplitStats(examples=len(rows), windows=len(rows), tokens=sum(map(len, rows)), trained_tokens=len(rows),
                       rows=len(rows), truncated=sum(c > 0 for c in cuts), dropped_tokens=sum(cuts))
    return table, stats, Counter(id2label[y] for y in labels)
