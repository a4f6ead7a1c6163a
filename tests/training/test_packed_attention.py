"""Per-document attention (sc2tune.training.attention): packed isolation still holds, against independent references.

References are plain transformers runs of the tiny StarCoder2 in eval mode: each document alone (no packing
at all), transformers' own ``sdpa`` with its mask, and ``eager`` with a sliding window.
"""

from __future__ import annotations

import pytest
import torch

from sc2tune.training.attention import NAME, document_segments, use_packed_attention

DOCS = [[610, 315, 45, 125, 731, 353, 461, 244, 54, 0], [474, 1463, 222, 1489, 45, 0], [462, 418, 63, 303, 0],
        [1018, 308, 299, 17, 5923, 7, 0]]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    return m.eval()


def _packed(rows: list[list[list[int]]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of concatenated documents, position ids restarting at 0, a pad tail that is its own segment."""
    ids = torch.full((len(rows), width), 4)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    for r, docs in enumerate(rows):
        at = 0
        for doc in docs:
            ids[r, at:at + len(doc)] = torch.tensor(doc)
            pos[r, at:at + len(doc)] = torch.arange(len(doc))
            at += len(doc)
        pos[r, at:] = torch.arange(width - at)
    return ids, pos


def test_document_segments_by_hand():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 2]])
    assert document_segments(pos) == [[(0, 3), (3, 5), (5, 9)], [(0, 6), (6, 9)]]


def test_packed_logits_equal_each_document_alone(model):
    ids, pos = _packed([[DOCS[0], DOCS[1]], [DOCS[2], DOCS[3]]], width=20)
    with torch.no_grad(), use_packed_attention(model.config) as used:
        assert used and model.config._attn_implementation == NAME
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits
    assert model.config._attn_implementation == "sdpa"  # restored
    with torch.no_grad():
        for r, docs in enumerate([[DOCS[0], DOCS[1]], [DOCS[2], DOCS[3]]]):
            at = 0
            for doc in docs:
                alone = model(input_ids=torch.tensor([doc])).logits[0]
                torch.testing.assert_close(packed[r, at:at + len(doc)], alone, atol=1e-5, rtol=1e-4)
                at += len(doc)
        # control: the same row under one running position sequence and no isolation differs
        leaky = model(input_ids=ids[:1], attention_mask=torch.ones_like(ids[:1])).logits[0]
    n0 = len(DOCS[0])
    assert not torch.allclose(leaky[n0:n0 + len(DOCS[1])], packed[0, n0:n0 + len(DOCS[1])], atol=1e-3)


def test_packed_gradients_equal_transformers_masked_sdpa(model):
    ids, pos = _packed([[DOCS[0], DOCS[2]], [DOCS[1], DOCS[3]]], width=18)
    weights = torch.randn(2, 18, model.config.vocab_size, generator=torch.Generator().manual_seed(0))

    def grads():
        model.zero_grad()
        (model(input_ids=ids, position_ids=pos, use_cache=False).logits * weights).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    reference = grads()  # transformers' sdpa with its block-diagonal mask from the position ids
    with use_packed_attention(model.config):
        ours = grads()
    model.zero_grad()
    assert len(ours) == len(reference) > 0
    for a, b in zip(ours, reference, strict=True):  # float32 sums over 49152 logits: compare relative to scale
        assert (a - b).norm() <= 1e-5 * b.norm()


def test_right_padding_matches_sdpa_on_real_tokens(model):
    ids = torch.full((2, 10), 4)
    ids[0, :10] = torch.tensor(DOCS[0])
    ids[1, :6] = torch.tensor(DOCS[1])
    mask = (ids != 4).long()
    mask[0] = 1
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        with use_packed_attention(model.config):
            ours = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(ours[0], reference[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours[1, :6], reference[1, :6], atol=1e-5, rtol=1e-4)


def test_left_padding_falls_back_to_transformers(model):
    ids = torch.full((2, 10), 4)
    ids[0] = torch.tensor(DOCS[0])
    ids[1, 4:] = torch.tensor(DOCS[1])
    mask = (torch.arange(10) >= torch.tensor([[0], [4]])).long()
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        with use_packed_attention(model.config):
            ours = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(ours[0], reference[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours[1, 4:], reference[1, 4:], atol=1e-5, rtol=1e-4)


def test_documents_longer_than_the_sliding_window(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    def load(attn):
        m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32,
                                                 sliding_window=4)
        return m.eval()

    eager, ours_model = load("eager"), load("sdpa")
    ids, pos = _packed([[DOCS[0], DOCS[3]]], width=20)
    with torch.no_grad():
        with use_packed_attention(ours_model.config):
            ours = ours_model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        at = 0
        for doc in (DOCS[0], DOCS[3]):
            alone = eager(input_ids=torch.tensor([doc]), use_cache=False).logits[0]
            torch.testing.assert_close(ours[at:at + len(doc)], alone, atol=1e-5, rtol=1e-4)
            at += len(doc)
