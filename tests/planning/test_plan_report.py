"""The plan as printed: suggestions a user can paste whatever the terminal's width."""

from __future__ import annotations

from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.recipe import load_recipe

RECIPE = Path(__file__).parents[2] / "recipes" / "starcoder2-15b" / "alpaca-lora.yaml"


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
