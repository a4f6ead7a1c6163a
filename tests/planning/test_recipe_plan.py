"""A recipe's plan (``sc2tune.planning.recipe_plan``), end to end: every shipped recipe plans through the CLI,
the analytic layouts give the very plan the meta-model path gives, and the CLI's errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sc2tune.cli import main
from sc2tune.planning import plan_recipe
from sc2tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
#: Every shipped recipe (accelerate configs are not recipes).
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml")
                 if isinstance(d := yaml.safe_load(p.read_text(encoding="utf-8")), dict) and "task" in d)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_plan_runs_on_every_recipe(recipe: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(recipe), "--gpu-memory", "24GB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    parts = data["components"]
    assert data["total_bytes"] >= parts["weights"] + parts["activations"] > 0
    assert isinstance(data["fits"], bool)
    assert main(["plan", str(recipe)]) == 0  # the rich table renders too
    assert "total per device" in capsys.readouterr().out


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_plan_equals_the_meta_model_path(path: Path, meta_path) -> None:
    recipe = load_recipe(path, [])
    for gpu, device in (("24GB", "cuda"), (None, "cpu")):
        assert plan_recipe(recipe, gpu, device=device) == meta_path(plan_recipe, recipe, gpu, device=device)


def test_cli_errors_without_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["plan"]) != 0
    assert main(["plan", "--model", str(tmp_path / "missing")]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "model folder not found" in err


def test_tokens_per_epoch_needs_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", str(REPO / "recipes/starcoderbase-7b/alpaca-lora.yaml"), "--tokens-per-epoch", "1M"]) != 0
    assert "--gpus" in capsys.readouterr().err
