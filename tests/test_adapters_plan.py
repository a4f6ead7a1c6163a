"""The planner's DoRA terms against a real DoRA step: PEFT's trainable-parameter count (magnitudes included)
and the peak live bytes of forward + backward measured with the tracker of tests/test_plan.py."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_plan import STARCODER2_TARGETS, _train_step_peak
from transformers import Starcoder2Config, Starcoder2ForCausalLM

from sc2tune.configs import meta_model
from sc2tune.planning.activations import ComputeSetup, estimate_activations, full_logits_loss_bytes
from sc2tune.planning.structure import adapter_shape, block_spec, resolve_targets

CONFIG = Starcoder2Config(vocab_size=1024, hidden_size=256, intermediate_size=1024, num_hidden_layers=2,
                          num_attention_heads=8, num_key_value_heads=2, use_bias=True, bos_token_id=0,
                          eos_token_id=0, attn_implementation="sdpa", tie_word_embeddings=True)


def test_dora_parameter_count_matches_peft() -> None:
    meta = meta_model(CONFIG, dtype=torch.float32)
    shape = adapter_shape(meta, resolve_targets(meta, "auto"), r=8, dora=True, modules_to_save=[])
    peft_model = get_peft_model(Starcoder2ForCausalLM(CONFIG),
                                LoraConfig(r=8, target_modules=STARCODER2_TARGETS, use_dora=True))
    assert shape.lora_params == peft_model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_dora_activation_estimate_matches_measured_peak(dropout: float) -> None:
    batch, length, r = 2, 128, 16
    torch.manual_seed(0)
    model = get_peft_model(Starcoder2ForCausalLM(CONFIG), LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=dropout,
                                                                     target_modules=STARCODER2_TARGETS,
                                                                     use_dora=True))
    model.train()
    ids = torch.randint(0, CONFIG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    measured = _train_step_peak(model, ids, chunked=False, chunk=0)

    meta = meta_model(CONFIG, dtype=torch.float32)
    block, layers = block_spec(meta, resolve_targets(meta, STARCODER2_TARGETS), full=False)
    setup = ComputeSetup.cpu_fp32()
    plain = estimate_activations(block, layers=layers, batch=batch, length=length, r=r, lora_dropout=dropout,
                                 setup=setup)
    dora = estimate_activations(block, layers=layers, batch=batch, length=length, r=r, lora_dropout=dropout,
                                setup=setup, dora=True)
    loss = full_logits_loss_bytes(tokens=batch * length, vocab=CONFIG.vocab_size, setup=setup)
    grads = 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)
    predicted = dora.peak(False, loss) + grads
    error = (predicted - measured) / measured
    print(f"measured {measured / 2**20:.1f} MiB, predicted {predicted / 2**20:.1f} MiB, error {error:+.1%}")
    assert abs(error) < 0.25
    without = (plain.peak(False, loss) + grads - measured) / measured
    assert abs(without) > abs(error)  # the DoRA terms bring the estimate nearer
