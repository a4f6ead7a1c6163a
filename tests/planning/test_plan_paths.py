"""Plan numbers from the analytic layouts are the numbers the meta-model path gives, for every shipped recipe.

The reference is the same planner on the layout read off transformers' meta-device model (the path every
other architecture takes, and the only one before the analytic layouts): the whole plan, suggestions
included, and the FSDP/time figures must be equal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import sc2tune.configs as configs
from sc2tune.planning import plan_recipe, weight_footprint
from sc2tune.planning.cluster import plan_cluster
from sc2tune.planning.throughput import parse_gpus
from sc2tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml")
                 if isinstance(d := yaml.safe_load(p.read_text(encoding="utf-8")), dict) and "task" in d)


@pytest.fixture
def meta_path(monkeypatch: pytest.MonkeyPatch):
    """Switch the analytic layouts off: every layout comes from the meta model."""
    def run(fn, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(configs, "_analytic_cached", lambda *a: None)
            return fn(*args, **kwargs)
    return run


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_plan_equals_the_meta_model_path(path: Path, meta_path) -> None:
    recipe = load_recipe(path, [])
    for gpu, device in (("24GB", "cuda"), (None, "cpu")):
        assert plan_recipe(recipe, gpu, device=device) == meta_path(plan_recipe, recipe, gpu, device=device)


def test_cluster_and_footprint_equal_the_meta_model_path(meta_path) -> None:
    recipe = load_recipe(REPO / "recipes/starcoder2-15b/alpaca-lora.yaml", [])
    count, gpu = parse_gpus("8xA100-80GB")

    def cluster():
        plan = plan_recipe(recipe, "80GB", suggest=False)
        return plan_cluster(recipe, plan, gpus=count, gpu=gpu, tokens_per_epoch=10**6)

    assert cluster() == meta_path(cluster)
    for name in ("bigcode/starcoder2-7b", "bigcode/starcoderbase-7b"):
        assert weight_footprint(name) == meta_path(weight_footprint, name)
