"""The accelerate configs in recipes/accelerate/ load with accelerate's own loader and say what they claim."""

from __future__ import annotations

from pathlib import Path

import pytest
import transformers
from accelerate.commands.config.config_args import load_config_from_file

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"

EXPECTED = {
    "ddp.yaml": ("MULTI_GPU", None),
    "fsdp.yaml": ("FSDP", None),
    "fsdp-qlora.yaml": ("FSDP", None),
    "deepspeed-zero2.yaml": ("DEEPSPEED", 2),
    "deepspeed-zero3.yaml": ("DEEPSPEED", 3),
}


def test_all_configs_are_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads(name):
    path = CONFIGS / name
    assert path.read_text().startswith("#"), "each config opens with a comment saying how to use it"
    config = load_config_from_file(str(path))
    distributed, zero_stage = EXPECTED[name]
    assert str(config.distributed_type).endswith(distributed)
    assert config.mixed_precision == "bf16"
    if zero_stage is not None:
        assert config.deepspeed_config["zero_stage"] == zero_stage
    if distributed == "FSDP":
        layer = config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"]
        assert hasattr(transformers.models.starcoder2.modeling_starcoder2, layer)
