"""A classification run's adapter folder, used with plain transformers + PEFT (no sc2tune code)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from sc2tune.recipe import load_recipe
from sc2tune.training import train

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).parents[2] / "recipes" / "quickstart" / "classify.yaml"
TEXTS = ["SELECT name FROM users WHERE id = 1;", "fn main() { println!(\"hi\"); }",
         "def f(x):\n    return [i * i for i in range(x) if i % 2 == 0]  # a longer snippet than the others"]


def test_plain_transformers_and_peft_load_the_classifier_as_trained(tmp_path: Path, tiny_model_dir: str):
    out = tmp_path / "run"
    recipe = load_recipe(RECIPE, [f"output_dir={out}", "data.eval=null", "train.max_steps=3", "data.max_length=16",
                                  "train.save_steps=1000", "train.lr=5e-2"])
    train(recipe, show_progress=False)
    adapter = out / "adapter"
    # a user has the base under its hub id; here the built-in model's local folder stands in for it
    config_file = adapter / "adapter_config.json"
    adapter_config = json.loads(config_file.read_text())
    adapter_config["base_model_name_or_path"] = tiny_model_dir
    config_file.write_text(json.dumps(adapter_config))

    # the README's three lines
    config = AutoConfig.from_pretrained(adapter / "classifier")
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = AutoModelForSequenceClassification.from_pretrained(adapter, config=config).eval()

    labels = json.loads((adapter / "labels.json").read_text())
    assert config.id2label == {int(k): v for k, v in labels.items()}
    batch = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")  # a batch larger than one
    with torch.no_grad():
        batched = model(**batch).logits

    # reference: each text alone, no padding, ids as training builds them (tokens[:max_length - 1] + eos)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    for text, row in zip(TEXTS, batched, strict=True):
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"][:15] + [eos]
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids])).logits[0]
        torch.testing.assert_close(row, alone, rtol=1e-4, atol=1e-4)
    assert len(tokenizer(TEXTS[2], truncation=True)["input_ids"]) == 16  # cut to data.max_length
    assert model.score.modules_to_save.default.weight.abs().sum() > 0  # the trained head, not a fresh one
