"""Shapes off the model layout (``sc2tune.planning.structure``): LoRA and DoRA parameter counts against PEFT's
own trainable-parameter count, ``all-linear`` against the layers PEFT wraps, and LoRA targets that match
nothing."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Starcoder2ForCausalLM

from sc2tune.architectures import layout_of_model
from sc2tune.configs import load_config, meta_model
from sc2tune.errors import RecipeError
from sc2tune.planning.structure import adapter_shape, resolve_targets

from .plan_helpers import CONFIG, STARCODER2_TARGETS, _small_configs


def test_lora_parameter_count_matches_peft() -> None:
    from peft import LoraConfig, get_peft_model

    config = _small_configs()["starcoder2-linear"]
    meta = layout_of_model(meta_model(config, dtype=torch.float32))
    shape = adapter_shape(meta, resolve_targets(meta, "auto"), r=8, dora=False, modules_to_save=[])
    peft_model = get_peft_model(Starcoder2ForCausalLM(config), LoraConfig(r=8, target_modules=STARCODER2_TARGETS))
    assert shape.lora_params == peft_model.get_nb_trainable_parameters()[0]


def test_dora_parameter_count_matches_peft() -> None:
    meta = layout_of_model(meta_model(CONFIG, dtype=torch.float32))
    shape = adapter_shape(meta, resolve_targets(meta, "auto"), r=8, dora=True, modules_to_save=[])
    peft_model = get_peft_model(Starcoder2ForCausalLM(CONFIG),
                                LoraConfig(r=8, target_modules=STARCODER2_TARGETS, use_dora=True))
    assert shape.lora_params == peft_model.get_nb_trainable_parameters()[0]


def test_unknown_target_is_an_error() -> None:
    meta = layout_of_model(meta_model(load_config("bigcode/starcoder2-3b")))
    with pytest.raises(RecipeError, match="gate_proj"):
        resolve_targets(meta, ["q_proj", "gate_proj"])


@pytest.mark.parametrize("head", ["causal-lm", "sequence-classification"])
def test_all_linear_targets_what_peft_targets(head: str) -> None:
    """``all-linear``: every linear layer but the output head (``lm_head``, or a classifier's ``score``), as PEFT
    resolves the same shorthand on the real model."""
    from peft.tuners.lora import LoraLayer
    from transformers import Starcoder2ForSequenceClassification

    from sc2tune.tiny import tiny_config

    classifier = head == "sequence-classification"
    config = tiny_config(num_labels=3)
    model = (Starcoder2ForSequenceClassification if classifier else Starcoder2ForCausalLM)(config)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear",
                                                  task_type="SEQ_CLS" if classifier else "CAUSAL_LM"))
    wrapped = {n for n, m in peft_model.base_model.model.named_modules() if isinstance(m, LoraLayer)}
    targets = resolve_targets(layout_of_model(meta_model(config, head=head, num_labels=3)), "all-linear")
    assert set(targets) == wrapped and len(targets) == 2 * 6  # q, k, v, o, c_fc, c_proj per layer
