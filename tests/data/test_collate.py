"""Collators (hand-built batches) and the length-grouped ordering."""

from __future__ import annotations

import torch

from sc2tune.data.collate import CausalCollator, ClassifyCollator


def test_causal_unpacked_pads_with_pad_id_and_masks():
    rows = [{"input_ids": [7, 8, 0], "labels": [-100, 8, 0], "length": 3}, {"input_ids": [9], "labels": [9]}]
    out = CausalCollator(pad_id=4)(rows)
    assert set(out) == {"input_ids", "attention_mask", "labels"}
    assert out["input_ids"].tolist() == [[7, 8, 0], [9, 4, 4]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 8, 0], [9, -100, -100]]
    assert out["input_ids"].dtype == torch.int64


def test_causal_packed_has_positions_and_no_mask():
    rows = [{"input_ids": [1, 2, 3, 5], "labels": [1, 2, 3, 5], "position_ids": [0, 1, 0, 1]},
            {"input_ids": [6], "labels": [6], "position_ids": [0]}]
    out = CausalCollator(pad_id=4, packed=True, pad_to_multiple_of=8)(rows)
    assert set(out) == {"input_ids", "labels", "position_ids"}
    assert out["position_ids"].tolist() == [[0, 1, 0, 1, 0, 1, 2, 3], [0, 0, 1, 2, 3, 4, 5, 6]]
    assert out["input_ids"][1].tolist() == [6, 4, 4, 4, 4, 4, 4, 4]
    assert out["labels"][0].tolist() == [1, 2, 3, 5, -100, -100, -100, -100]


def test_classify_collator():
    out = ClassifyCollator(pad_id=4)([{"input_ids": [1, 0], "labels": 2}, {"input_ids": [3, 3, 0], "labels": 0}])
    assert out["input_ids"].tolist() == [[1, 0, 4], [3, 3, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1]]
    assert out["labels"].tolist() == [2, 0] and out["labels"].dtype == torch.int64
