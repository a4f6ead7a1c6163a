"""Time estimates of ``sc2tune plan --gpus`` (``sc2tune.planning.throughput``) against hand computations and
torch's FLOP counter.

* FLOPs per token: a tiny GPTBigCode counted by hand from its shapes, and the matmul FLOPs PyTorch's
  ``FlopCounterMode`` records in a real forward + backward (eager attention, which multiplies the whole
  ``L x L`` square: ``2A`` per token in the forward where the causal average is ``A``).
* GPU names: parsing and the table's figures.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

from sc2tune.architectures import layout_of_model
from sc2tune.configs import meta_model
from sc2tune.errors import UserError
from sc2tune.planning.throughput import (
    GPUS,
    attention_flops,
    estimate_time,
    matmul_params,
    parse_count,
    parse_gpus,
    training_flops,
)

H, LAYERS, HEADS, F, V, L, R = 64, 2, 4, 256, 1000, 32, 8
HEAD_DIM = H // HEADS


def _config() -> GPTBigCodeConfig:
    return GPTBigCodeConfig(vocab_size=V, n_positions=128, n_embd=H, n_layer=LAYERS, n_head=HEADS, n_inner=F,
                            multi_query=True, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)


def _hand_counts() -> tuple[int, int, int]:
    """(N, A, N_lora) for the tiny config by hand: c_attn maps h -> h + 2 head_dim (one shared k/v head)."""
    c_attn, attn_proj, c_fc, mlp_proj = H * (H + 2 * HEAD_DIM), H * H, H * F, F * H
    n = LAYERS * (c_attn + attn_proj + c_fc + mlp_proj) + V * H  # + the (tied) output layer
    a = 2 * LAYERS * L * H  # 4 p d_q per layer at position p, p ~ L/2
    lora = LAYERS * R * ((H + H + 2 * HEAD_DIM) + (H + H) + (H + F) + (F + H))
    return n, a, lora


def test_flops_per_token_by_hand() -> None:
    model = layout_of_model(meta_model(_config(), dtype=torch.float32))
    n, a, lora = _hand_counts()
    assert matmul_params(model) == n
    assert attention_flops(layers=LAYERS, length=L, q_width=H) == a
    full = training_flops(model, method="full", lora_params=0, length=L, q_width=H, gradient_checkpointing=False)
    assert full.train == 6 * n + 3 * a
    qlora = training_flops(model, method="qlora", lora_params=lora, length=L, q_width=H, gradient_checkpointing=True)
    assert qlora.train == 4 * n + 3 * a + 6 * lora + (2 * n + a + 2 * lora)


def test_full_training_flops_match_torch_flop_counter() -> None:
    """Full fine-tuning, one step: PyTorch counts 6N + 6A (the whole attention square, forward and backward)."""
    torch.manual_seed(0)
    model = GPTBigCodeForCausalLM(_config()).train()
    model.config._attn_implementation = "eager"
    ids = torch.randint(5, V, (2, L))
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids, labels=ids).loss.backward()
    n, a, _ = _hand_counts()
    flops = training_flops(layout_of_model(model), method="full", lora_params=0, length=L, q_width=H,
                           gradient_checkpointing=False)
    assert flops.matmul_params == n
    assert counter.get_total_flops() == ids.numel() * (6 * n + 6 * a)


def test_time_is_tokens_times_flops_over_cluster_throughput() -> None:
    model = layout_of_model(meta_model(_config(), dtype=torch.float32))
    flops = training_flops(model, method="full", lora_params=0, length=L, q_width=H, gradient_checkpointing=False)
    count, gpu = parse_gpus("8xA100-80GB")
    t = estimate_time(flops, tokens_per_epoch=10**9, epochs=3, gpus=count, gpu=gpu, mfu=0.5)
    seconds = 10**9 * flops.train / (8 * 312e12 * 0.5)
    assert t.hours_per_epoch == pytest.approx(seconds / 3600)
    assert t.hours_total == pytest.approx(3 * seconds / 3600)
    assert t.implied_mfu(2 * t.hours_total) == pytest.approx(0.25)
    with pytest.raises(UserError, match="mfu"):
        estimate_time(flops, tokens_per_epoch=1, epochs=1, gpus=1, gpu=gpu, mfu=1.5)


@pytest.mark.parametrize(("text", "count", "name", "tflops", "memory"), [
    ("8xA100-80GB", 8, "A100-80GB", 312.0, 80),
    ("2 x a100-40gb", 2, "A100-40GB", 312.0, 40),
    ("H100-80GB", 1, "H100-80GB", 989.0, 80),
    ("4*L4", 4, "L4", 121.0, 24),
    ("1xA10G", 1, "A10G", 70.0, 24),
    ("2xRTX4090", 2, "RTX-4090", 165.2, 24),
    ("2xrtx_4090", 2, "RTX-4090", 165.2, 24),
])
def test_parse_gpus(text: str, count: int, name: str, tflops: float, memory: int) -> None:
    got_count, spec = parse_gpus(text)
    assert (got_count, spec.name, spec.bf16_tflops, spec.memory_gib) == (count, name, tflops, memory)


@pytest.mark.parametrize("text", ["8xV100", "0xL4", "eight A100", "", "8x"])
def test_parse_gpus_rejects_unknown(text: str) -> None:
    with pytest.raises(UserError) as err:
        parse_gpus(text)
    assert "--gpus" in str(err.value)


def test_gpu_table_is_dense_bf16() -> None:
    """Dense figures: half of NVIDIA's 'with sparsity' numbers, fp32 accumulation on the RTX 4090."""
    assert {g.name: g.bf16_tflops for g in GPUS.values()} == {
        "A100-40GB": 312.0, "A100-80GB": 312.0, "H100-80GB": 989.0, "L4": 121.0, "A10G": 70.0, "RTX-4090": 165.2}


@pytest.mark.parametrize(("text", "value"), [("1.6M", 1_600_000), ("250k", 250_000), ("2e6", 2_000_000),
                                             ("3B", 3 * 10**9), ("1200", 1200)])
def test_parse_count(text: str, value: int) -> None:
    assert parse_count(text) == value
