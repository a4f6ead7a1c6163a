"""`sc2tune data RECIPE`: preview with the trained part marked, --json statistics, clean errors;
the quickstart recipes build their data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.data import build_datasets
from sc2tune.modeling import ModelSource, load_tokenizer
from sc2tune.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ["alpaca", "fim", "classify"]


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_json_last_line_has_the_statistics(in_root, capsys):
    assert main(["data", "recipes/quickstart/fim.yaml", "data.max_length=128", "--show", "1", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    stats = json.loads(lines[-1])
    for key in ("examples", "tokens", "trained_tokens", "rows", "packing_efficiency", "truncated",
                "dropped_tokens", "skipped_files"):
        assert isinstance(stats[key], (int, float)), key
    assert set(stats["fim"]) >= {"psm", "spm", "plain"}
    # fim trains every token but each sequence's first (nothing in its document predicts it)
    assert stats["trained_tokens"] == stats["tokens"] - stats["windows"]
    assert any("<repo_name>" in line for line in lines[:-1])  # the preview came first


def test_plain_preview_brackets_the_trained_part(in_root, capsys):
    assert main(["data", "recipes/quickstart/alpaca.yaml", "--show", "1"]) == 0
    out = capsys.readouterr().out
    prompt, _, trained = out.partition("### Response:⟦")
    assert "### Instruction:" in prompt and "⟦" not in prompt
    assert trained.split("⟧")[0].endswith("<|endoftext|>")


def test_bad_input_is_a_message_not_a_traceback(in_root, capsys):
    assert main(["data", "recipes/quickstart/alpaca.yaml", "data.train=missing.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and str(ROOT / "missing.jsonl") in err and "Traceback" not in err


@pytest.mark.parametrize("name", QUICKSTART)
def test_quickstart_recipes_build(in_root, name):
    recipe = load_recipe(ROOT / "recipes" / "quickstart" / f"{name}.yaml")
    text = (ROOT / "recipes" / "quickstart" / f"{name}.yaml").read_text()
    assert text.startswith("#") and f"recipes/quickstart/{name}.yaml" in text.split("\nmodel:")[0]
    bundle = build_datasets(recipe, load_tokenizer(ModelSource.from_recipe(recipe)), show_progress=False)
    assert len(bundle.train) > 0 and bundle.eval is not None and len(bundle.eval) > 0
    assert bundle.stats.truncated == 0 and bundle.stats.dropped_tokens == 0
    if name == "classify":
        assert sorted(bundle.id2label.values()) == ["go", "javascript", "python", "rust", "sql"]


def test_fim_preview_shows_a_psm_and_an_spm_example_first(run_cli, tmp_path):
    recipe = Path(__file__).parents[2] / "recipes" / "quickstart" / "fim.yaml"
    result = run_cli("data", str(recipe), "--show", "3", f"data.cache_dir={tmp_path / 'cache'}")
    assert result.returncode == 0, result.stderr
    parts = re.split(r"^─+ train example \d+ \(\d+ tokens, (PSM|SPM|plain)\) ─+$", result.stdout, flags=re.M)
    kinds, texts = parts[1::2], parts[2::2]
    assert kinds[:2] == ["PSM", "SPM"] and len(kinds) == 3
    psm, spm = (t.replace("⟦", "").replace("⟧", "") for t in texts[:2])
    assert "<fim_prefix>" in psm and "<fim_prefix><fim_suffix>" not in psm  # PSM: the prefix text follows
    assert "<fim_prefix><fim_suffix>" in spm  # SPM: the suffix comes first
