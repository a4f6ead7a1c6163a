"""A recipe on ``N x GPU`` (``sc2tune.planning.cluster``): the same figures from the analytic layouts as from
the meta model, and the new recipes plan on a cluster through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.planning import plan_recipe, weight_footprint
from sc2tune.planning.cluster import plan_cluster
from sc2tune.planning.throughput import parse_gpus
from sc2tune.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


def test_cluster_and_footprint_equal_the_meta_model_path(meta_path) -> None:
    recipe = load_recipe(REPO / "recipes/starcoder2-15b/alpaca-lora.yaml", [])
    count, gpu = parse_gpus("8xA100-80GB")

    def cluster():
        plan = plan_recipe(recipe, "80GB", suggest=False)
        return plan_cluster(recipe, plan, gpus=count, gpu=gpu, tokens_per_epoch=10**6)

    assert cluster() == meta_path(cluster)
    for name in ("bigcode/starcoder2-7b", "bigcode/starcoderbase-7b"):
        assert weight_footprint(name) == meta_path(weight_footprint, name)


NEW_RECIPES = ["starcoder-15b/gpteacher-full-fsdp.yaml", "starcoderbase-7b/fim-qlora.yaml",
               "starcoderbase-7b/alpaca-lora.yaml"]


@pytest.mark.parametrize("name", NEW_RECIPES)
def test_new_recipes_plan_on_a_cluster(name: str, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the recipes' data paths are relative to the repository root
    assert main(["plan", f"recipes/{name}", "--gpus", "8xA100-80GB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cluster = data["cluster"]
    assert cluster["gpus"] == 8 and cluster["fsdp"]["total"] > 0 and cluster["fsdp"]["fits"]
    assert cluster["time"]["tokens_per_epoch"] > 0 and cluster["time"]["hours_total"] > 0
    assert main(["plan", f"recipes/{name}", "--gpus", "2xH100-80GB", "--compare-hours", "5"]) == 0
    out = capsys.readouterr().out
    assert "FSDP full sharding over 2 x H100-80GB" in out and "a reported 5 h" in out
