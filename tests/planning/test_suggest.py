"""Changes that make a recipe fit (``sc2tune.planning.suggest``): the 15B on a 24 GB card, and suggestions
printed as lines a user can paste whatever the terminal's width."""

from __future__ import annotations

from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.planning import plan_recipe
from sc2tune.recipe import load_recipe, recipe_from_dict

from .plan_helpers import _recipe

RECIPE = Path(__file__).parents[2] / "recipes" / "starcoder2-15b" / "alpaca-lora.yaml"


def test_15b_lora_does_not_fit_24gb_and_suggestions_do() -> None:
    recipe = recipe_from_dict(_recipe())
    plan = plan_recipe(recipe, "24GiB")  # a 24 GB card holds 24 GiB
    assert plan.fits is False
    # bf16 weights alone are 29.7 GiB: only QLoRA can fit, and the suggestion must say so
    assert plan.suggestions and all(s.fits for s in plan.suggestions)
    assert any("adapter.method=qlora" in s.overrides for s in plan.suggestions)
    # QLoRA + checkpointing fit at the recipe's own micro-batch: no needless batch shrink is proposed
    assert not any(o.startswith("train.batch_size") for s in plan.suggestions for o in s.overrides)
    for s in plan.suggestions:
        again = plan_recipe(recipe_from_dict(_recipe(), overrides=list(s.overrides)), "24GiB", suggest=False)
        assert again.fits and again.total_bytes == s.total_bytes


@pytest.mark.parametrize("width", ["40", "80"])
def test_each_suggested_override_set_is_one_pasteable_line(width: str, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture, tmp_path: Path):
    monkeypatch.setenv("COLUMNS", width)
    assert main(["plan", str(RECIPE), "--gpu-memory", "16GB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    pasted = [line.strip() for line in lines if line.startswith("      ") and "=" in line]
    assert pasted, "no suggestion printed"
    for overrides in pasted:
        assert all("=" in part for part in overrides.split())  # nothing but key=value pairs, none cut
        load_recipe(RECIPE, overrides.split())  # and the line, pasted, is a valid set of overrides
