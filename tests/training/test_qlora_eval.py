"""QLoRA on CPU: evaluation does not switch 4-bit layers to another kernel, and training after it works."""

from __future__ import annotations

from pathlib import Path

import bitsandbytes.functional as bnbf
import pytest
import torch

from sc2tune.modeling import ModelSource, load_model
from sc2tune.recipe import QuantSpec, load_recipe
from sc2tune.training import train

RECIPE = Path(__file__).parents[2] / "recipes" / "quickstart" / "alpaca.yaml"


def test_a_4bit_layer_in_eval_mode_computes_the_training_path():
    model = load_model(ModelSource(dtype="float32", quant=QuantSpec())).eval()
    layer = model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, 5, layer.in_features)
    with torch.no_grad():
        got = layer(x)
        weight = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(torch.float32)
    expected = x @ weight.T + layer.bias  # what the layer computes while training, by hand
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_qlora_trains_after_its_first_evaluation(tmp_path: Path):
    recipe = load_recipe(RECIPE, [f"output_dir={tmp_path / 'run'}", "adapter.method=qlora", "train.max_steps=2",
                                  "train.eval_steps=1", "train.save_steps=1000"])
    result = train(recipe, show_progress=False)  # evaluates at step 0, trains, evaluates again
    assert result.global_step == 2 and result.final_eval["eval_loss"] > 0
