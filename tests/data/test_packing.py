"""Packing: best-fit decreasing by hand, row layout, efficiency, and isolation in the real model.

The isolation test runs the tiny StarCoder2 in eval mode: the logits of each document inside a packed
row (collator output: restarting position_ids, no attention_mask) must equal its logits when run alone.
A control shows the same row WITH an attention mask lets documents see each other (the test can fail).
Note: transformers 5 derives the packed mask only when no KV cache is in play, so training must call the
model with ``use_cache=False`` (sc2tune's trainer does); with the cache on, packed documents leak.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from sc2tune.data.collate import CausalCollator
from sc2tune.data.packing import TokenSeqs, best_fit_decreasing, pack, unpacked


def _seqs(lengths, start=0):
    ids, labels, v = [], [], start
    for n in lengths:
        ids.append(np.arange(v, v + n))
        labels.append(np.arange(v, v + n) * -1)
        v += n
    return TokenSeqs.from_lists(ids, labels)


def test_best_fit_decreasing_by_hand():
    # 6 -> new bin A (room 4); 5 -> new bin B (room 5); 4 -> A (exact fit, best); 3 -> B (room 2); 2 -> B
    assert best_fit_decreasing(np.array([6, 5, 4, 3, 2]), 10, seed=0) == [[0, 2], [1, 3, 4]]
    # best fit, not first fit: 7 -> A (room 3), 5 -> B (room 5), 3 -> A (room 3 fits exactly, B has 5)
    assert best_fit_decreasing(np.array([3, 7, 5]), 10, seed=0) == [[1, 0], [2]]
    with pytest.raises(ValueError):
        best_fit_decreasing(np.array([11]), 10, seed=0)


def test_packed_rows_hold_every_token_once_with_restarting_positions():
    lengths = [5, 3, 8, 2, 7, 1]
    seqs = _seqs(lengths)
    ds, rows = pack(seqs, 10, seed=0)
    assert rows == len(ds)
    seen = []
    for row in ds:
        assert len(row["input_ids"]) <= 10
        # split the row where position ids restart; each piece must be one whole source sequence
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
        for a, b in zip(starts, starts[1:], strict=False):
            piece = row["input_ids"][a:b]
            assert row["position_ids"][a:b] == list(range(b - a))
            assert row["labels"][a:b] == [-100] + [-x for x in piece[1:]]  # a document's first token: no target
            assert piece == list(range(piece[0], piece[0] + len(piece)))
            seen.append(piece[0])
    assert sorted(seen) == [0, 5, 8, 16, 18, 25]
    assert sum(lengths) == sum(len(r) for r in ds["input_ids"])


def test_packing_efficiency_on_instruction_sized_records():
    lengths = np.random.default_rng(0).integers(150, 601, size=3000)
    bins = best_fit_decreasing(lengths, 1024, seed=0)
    efficiency = lengths.sum() / (len(bins) * 1024)
    assert efficiency >= 0.95, efficiency


def test_unpacked_rows_keep_order_and_lengths():
    ds = unpacked(_seqs([3, 1, 2]))
    assert ds["input_ids"] == [[0, 1, 2], [3], [4, 5]]
    assert ds["labels"] == [[-100, -1, -2], [-100], [-100, -5]]
    assert ds["length"] == [3, 1, 2]


def test_packed_labels_never_target_a_documents_first_token():
    # three documents of lengths 3, 2, 4 (labels = ids, all trained) packed into one row of 9
    seqs = TokenSeqs.from_lists([np.array([10, 11, 12]), np.array([20, 21]), np.array([30, 31, 32, 33])],
                                [np.array([10, 11, 12]), np.array([20, 21]), np.array([30, 31, 32, 33])])
    ds, rows = pack(seqs, 9, seed=0)
    assert rows == 1
    by_start = {}
    row = ds[0]
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [9]
    for a, b in zip(starts, starts[1:], strict=False):
        by_start[row["input_ids"][a]] = row["labels"][a:b]
    assert by_start == {10: [-100, 11, 12], 20: [-100, 21], 30: [-100, 31, 32, 33]}
    # the producer's arrays are left as they were
    assert TokenSeqs.from_lists([np.array([1, 2])], [np.array([1, 2])]).labels.tolist() == [-100, 2]
    raw = np.array([5, 6], dtype=np.int32)
    TokenSeqs(np.array([5, 6], dtype=np.int32), raw, np.array([0, 2]))
    assert raw.tolist() == [5, 6]


def test_packed_loss_is_the_sum_of_the_documents_losses(tiny_model_dir):
    """Plain torch reference: F.cross_entropy of each document run alone (no sc2tune loss code)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    model.eval()
    docs = [[610, 315, 45, 125, 731, 0], [474, 1463, 222, 1489, 45, 0], [1018, 308, 299, 17, 0]]
    # FIM-like documents train every token; the last one is instruct-like: a 2-token prompt not trained
    labels = [list(docs[0]), list(docs[1]), [-100, -100, 299, 17, 0]]
    seqs = TokenSeqs.from_lists([np.array(d) for d in docs], [np.array(x) for x in labels])
    ds, rows = pack(seqs, 32, seed=0)
    assert rows == 1
    batch = CausalCollator(pad_id=4, packed=True)([ds[0]])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        packed = F.cross_entropy(logits[:-1], batch["labels"][0, 1:], ignore_index=-100, reduction="sum")
        alone = sum(F.cross_entropy(model(input_ids=torch.tensor([d])).logits[0, :-1], torch.tensor(y[1:]),
                                    ignore_index=-100, reduction="sum") for d, y in zip(docs, labels, strict=True))
    n_targets = sum(sum(t != -100 for t in y[1:]) for y in labels)
    assert int((batch["labels"][0, 1:] != -100).sum()) == n_targets == 5 + 5 + 3
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_documents_do_not_see_each_other(tiny_model_dir, tokenizer, attn):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32)
    model.eval()
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"] + [0] for t in
            ("def f(x):\n    return x + 1\n", "import os\nprint(os.getcwd())\n", "class A:\n    pass\n")]
    seqs = TokenSeqs.from_lists([np.array(d) for d in docs], [np.array(d) for d in docs])
    ds, rows = pack(seqs, 64, seed=0)
    assert rows == 1
    batch = CausalCollator(pad_id=4, packed=True)([ds[0], ds[0]])
    assert "attention_mask" not in batch
    # pad to 64 columns so the row ends in a pad tail segment
    batch = CausalCollator(pad_id=4, packed=True, pad_to_multiple_of=64)([ds[0]])
    with torch.no_grad():
        # use_cache=False as in training: with a KV cache transformers 5 skips the packed-sequence mask
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        row = batch["input_ids"][0].tolist()
        pos = batch["position_ids"][0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0]
        found = 0
        for doc in docs:
            a = next(s for s in starts if row[s:s + len(doc)] == doc)
            alone = model(input_ids=torch.tensor([doc])).logits[0]
            torch.testing.assert_close(packed[a:a + len(doc)], alone, atol=1e-5, rtol=1e-4)
            found += 1
        assert found == 3
        # control: with an explicit all-ones mask and running positions the later documents change
        leaky = model(input_ids=batch["input_ids"], attention_mask=torch.ones_like(batch["input_ids"])).logits[0]
        second = sorted(starts)[1]
        doc_len = next(len(d) for d in docs if row[second:second + len(d)] == d)
        assert not torch.allclose(leaky[second:second + doc_len], packed[second:second + doc_len], atol=1e-3)
