"""The chunked output-layer cross-entropy equals plain cross-entropy over full logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from sc2tune.training.loss import linear_cross_entropy_sum, shifted_trained_positions


def reference(hidden, weight, bias, targets):
    logits = hidden @ weight.t() + (0 if bias is None else bias)
    return F.cross_entropy(logits.double(), targets, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("with_bias", [False, True])
def test_value_and_gradients_match_plain_cross_entropy(chunk, with_bias):
    g = torch.Generator().manual_seed(0)
    n, d, v = 37, 16, 301
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(v, d, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True) if with_bias else None
    targets = torch.randint(0, v, (n,), generator=g)

    ours = linear_cross_entropy_sum(hidden, weight, bias, targets, chunk_size=chunk)
    grads = torch.autograd.grad(ours * 0.5, [t for t in (hidden, weight, bias) if t is not None])
    ref = reference(hidden, weight, bias, targets)
    ref_grads = torch.autograd.grad(ref * 0.5, [t for t in (hidden, weight, bias) if t is not None])

    assert torch.allclose(ours.double(), ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        assert torch.allclose(a.double(), b, rtol=1e-5, atol=1e-5)  # logits are float32 by design


def test_targets_too_unlikely_for_float32_probabilities_keep_their_exact_loss():
    """A target whose softmax probability underflows float32 (logit gap > ~100) still gets log-sum-exp - z[y]."""
    g = torch.Generator().manual_seed(1)
    n, d, v = 12, 8, 97
    hidden = (torch.randn(n, d, generator=g) * 40).requires_grad_()
    weight = torch.randn(v, d, generator=g)
    with torch.no_grad():
        logits = hidden @ weight.t()
    targets = torch.randint(0, v, (n,), generator=g)
    targets[::2] = logits[::2].argmin(-1)  # half the rows: the least likely token
    ref = reference(hidden.detach().double(), weight.double(), None, targets)
    assert float(ref) / n > 150  # far past float32's exp range: the hard case

    ours = linear_cross_entropy_sum(hidden, weight, None, targets, chunk_size=5)
    (grad,) = torch.autograd.grad(ours, [hidden])
    hidden64 = hidden.detach().double().requires_grad_()
    (ref_grad,) = torch.autograd.grad(reference(hidden64, weight.double(), None, targets), [hidden64])
    assert torch.isfinite(ours) and ours.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(grad.double(), ref_grad.double(), rtol=1e-4, atol=1e-4)


def test_frozen_weight_gets_no_gradient():
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(50, 8)  # frozen (tied embedding under LoRA)
    loss = linear_cross_entropy_sum(hidden, weight, None, torch.randint(0, 50, (5,)), chunk_size=2)
    loss.backward()
    assert hidden.grad is not None and weight.grad is None


def test_ignored_positions_are_excluded_and_labels_shifted():
    g = torch.Generator().manual_seed(1)
    b, length, d, v = 3, 9, 8, 40
    hidden = torch.randn(b, length, d, generator=g, requires_grad=True)
    weight = torch.randn(v, d, generator=g)
    labels = torch.randint(0, v, (b, length), generator=g)
    labels[0, :4] = -100  # prompt
    labels[2, 6:] = -100  # padding
    h, y = shifted_trained_positions(hidden, labels)
    ours = linear_cross_entropy_sum(h, weight, None, y, chunk_size=4)

    logits = hidden @ weight.t()
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=-100,
                          reduction="sum")
    assert torch.allclose(ours, ref, rtol=1e-5)
    (g_ours,) = torch.autograd.grad(ours, hidden)
    (g_ref,) = torch.autograd.grad(ref, hidden)
    assert torch.allclose(g_ours, g_ref, atol=1e-6)
    assert int((labels[:, 1:] != -100).sum()) == y.numel()


def test_equals_the_models_own_loss_on_the_tiny_model():
    """Hidden state + lm_head path equals transformers' own (mean) causal-LM loss."""
    from sc2tune.modeling import ModelSource, load_model

    model = load_model(ModelSource()).eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(10, 5000, (2, 16), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        expected = model(input_ids=ids, labels=labels).loss
        out = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1)
    h, y = shifted_trained_positions(out.hidden_states[-1], labels)
    head = model.get_output_embeddings()
    ours = linear_cross_entropy_sum(h, head.weight, head.bias, y) / y.numel()
    assert torch.allclose(ours, expected, rtol=1e-5)


def test_bfloat16_weights_match_logits_taken_in_bfloat16_then_float32():
    """A bf16 head: logits are computed in bf16 (like F.linear) and the softmax in float32; the last, short
    chunk reuses the first chunk's buffer."""
    g = torch.Generator().manual_seed(3)
    n, d, v = 11, 16, 97
    hidden = torch.randn(n, d, generator=g).to(torch.bfloat16).requires_grad_()
    weight = torch.randn(v, d, generator=g).to(torch.bfloat16)
    targets = torch.randint(0, v, (n,), generator=g)
    ours = linear_cross_entropy_sum(hidden, weight, None, targets, chunk_size=4)
    (g_ours,) = torch.autograd.grad(ours, hidden)
    logits = F.linear(hidden, weight).float()
    ref = F.cross_entropy(logits, targets, reduction="sum")
    (g_ref,) = torch.autograd.grad(ref, hidden)
    assert torch.allclose(ours, ref, rtol=1e-5)
    assert g_ours.dtype == torch.bfloat16
    assert torch.allclose(g_ours.float(), g_ref.float(), rtol=2e-2, atol=2e-2)
