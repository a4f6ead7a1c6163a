"""SparseDropout draws masks with nn.Dropout's distribution and back-propagates through the same mask."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from sc2tune.training.dropout import SparseDropout, dropped_positions, use_sparse_lora_dropout


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9])
def test_drop_rate_and_independence_match_bernoulli(p):
    torch.manual_seed(0)
    n = 2_000_000
    mask = torch.zeros(n, dtype=torch.bool)
    mask[dropped_positions(n, p)] = True
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(mask.float().mean().item() - p) < 5 * sigma
    # Neighbours and elements 7 apart are independent: P(both dropped) = p^2.
    for lag in (1, 7):
        both = (mask[lag:] & mask[:-lag]).float().mean().item()
        assert abs(both - p * p) < 5 * math.sqrt(p * p * (1 - p * p) / n)
    # Runs of kept elements between drops are Geometric: P(gap = 1) = p, P(gap = 2) = (1 - p) p.
    gaps = torch.diff(torch.nonzero(mask).flatten())
    for k in (1, 2):
        expected = (1 - p) ** (k - 1) * p
        assert abs((gaps == k).float().mean().item() - expected) < 5 * math.sqrt(expected / gaps.numel()) + 1e-4


def test_positions_are_sorted_unique_and_in_range_even_when_more_draws_are_needed():
    torch.manual_seed(1)
    for n in (1, 2, 17, 1000):
        pos = dropped_positions(n, 0.5)
        assert pos.numel() == 0 or (pos.min() >= 0 and pos.max() < n)
        assert torch.equal(pos, torch.unique(pos))


def test_forward_scales_kept_elements_and_backward_uses_the_same_mask():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    layer = SparseDropout(0.25).train()
    out = layer(x)
    dropped = out == 0
    assert 0 < dropped.sum() < x.numel()
    assert torch.allclose(out[~dropped], x[~dropped] / 0.75)
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected = torch.where(dropped, torch.zeros_like(upstream), upstream / 0.75)
    assert torch.allclose(x.grad, expected)


def test_eval_mode_and_zero_rate_are_identity_and_seed_reproduces():
    x = torch.randn(8, 8)
    assert SparseDropout(0.5).eval()(x) is x
    assert SparseDropout(0.0).train()(x) is x
    torch.manual_seed(3)
    a = SparseDropout(0.5).train()(x)
    torch.manual_seed(3)
    b = SparseDropout(0.5).train()(x)
    assert torch.equal(a, b)


def test_replaces_peft_lora_dropout_and_keeps_outputs_in_eval():
    base = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    model = get_peft_model(base, LoraConfig(r=2, lora_dropout=0.1, target_modules=["0", "2"]))
    x = torch.randn(5, 16)
    model.eval()
    before = model(x)
    assert use_sparse_lora_dropout(model) == 2
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.Dropout)]
    assert kinds == [SparseDropout, SparseDropout]
    assert all(m.p == 0.1 for m in model.modules() if isinstance(m, SparseDropout))
    assert torch.equal(model(x), before)
