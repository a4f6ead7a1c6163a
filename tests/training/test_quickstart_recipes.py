"""Every quickstart recipe runs on CPU and its eval loss falls below the untrained model's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.recipe import load_recipe
from sc2tune.training import train

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = sorted((ROOT / "recipes" / "quickstart").glob("*.yaml"))

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", QUICKSTART, ids=lambda p: p.stem)
def test_quickstart_recipe_trains_and_eval_loss_falls(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name their data relative to the repository root
    recipe = load_recipe(path, [f"output_dir={tmp_path / 'run'}"])
    result = train(recipe, show_progress=False)
    records = [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    assert evals[0][0] == 0, "the untrained model is evaluated first"
    if recipe.task != "classify":  # the classify sample is a format example (41 records); see test_classify_real
        assert evals[-1][1] < evals[0][1] - 0.05, evals
    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_model.safetensors").is_file()
    if recipe.task == "classify":
        labels = json.loads((result.adapter_dir / "labels.json").read_text())
        assert sorted(labels.values()) == list(labels.values())
