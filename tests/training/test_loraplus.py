"""LoRA+ learning rates per parameter group, embedding adapters included (``adapter.loraplus_lr_embedding``).

Reference: the LoRA+ rule written out here per parameter name (B: ``ratio * lr``; the factors of an embedding
adapter, PEFT's ``lora_embedding_A/B``: the embedding rate; everything else: ``lr``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import TrainingArguments

from sc2tune.adapters import attach_adapter
from sc2tune.errors import RecipeError
from sc2tune.modeling import ModelSource, load_model, objective_for
from sc2tune.recipe import recipe_from_dict
from sc2tune.training.trainer import Sc2Trainer

LR, RATIO = 1e-4, 16


def _learning_rates(tmp_path: Path, **adapter: object) -> dict[str, float]:
    recipe = recipe_from_dict({"task": "fim", "data": {"train": "unused"}, "model": {"dtype": "float32"},
                               "adapter": {"target_modules": ["q_proj", "embed_tokens"], "dropout": 0.0,
                                           "loraplus_lr_ratio": RATIO, **adapter}})
    model = attach_adapter(load_model(ModelSource.of(recipe.model), pad_token_id=4), recipe)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=LR, report_to=[], use_cpu=True)
    trainer = Sc2Trainer(model=model, args=args, objective=objective_for("fim"), pad_token_id=4,
                         loraplus_lr_ratio=recipe.adapter.loraplus_lr_ratio,
                         loraplus_lr_embedding=recipe.adapter.loraplus_lr_embedding)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    return {name: lr_of[id(p)] for name, p in model.named_parameters() if p.requires_grad}


def _expected(name: str, embedding_lr: float) -> float:
    if "lora_embedding_" in name:
        return embedding_lr
    return RATIO * LR if "lora_B" in name else LR


@pytest.mark.parametrize(("setting", "embedding_lr"), [(None, LR), (3e-5, 3e-5)])
def test_embedding_adapters_follow_the_base_rate_or_the_recipe_key(tmp_path: Path, setting: float | None,
                                                                   embedding_lr: float):
    rates = _learning_rates(tmp_path, **({} if setting is None else {"loraplus_lr_embedding": setting}))
    assert any("lora_embedding_" in name for name in rates)  # the embedding is adapted
    for name, rate in rates.items():
        assert rate == pytest.approx(_expected(name, embedding_lr)), name


def test_embedding_rate_without_loraplus_is_refused():
    with pytest.raises(RecipeError, match="loraplus_lr_embedding"):
        recipe_from_dict({"task": "fim", "data": {"train": "x"}, "adapter": {"loraplus_lr_embedding": 1e-5}})
