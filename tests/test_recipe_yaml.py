"""Hostile recipe YAML: duplicate keys, alias bombs, deep nesting, and remote code switched on by a file."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.errors import RecipeError
from sc2tune.recipe import load_recipe

BASE = "task: fim\ndata:\n  train: code/\n"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


def test_a_duplicate_key_is_an_error_naming_both_lines(tmp_path: Path):
    path = write(tmp_path, BASE + "train:\n  lr: 1.0e-4\n  batch_size: 2\n  lr: 3.0e-4\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    text = str(err.value)
    assert "duplicate key 'lr'" in text and "line 5" in text and f"{path}:7" in text


def test_a_duplicate_section_is_an_error(tmp_path: Path):
    with pytest.raises(RecipeError, match="duplicate key 'data'"):
        load_recipe(write(tmp_path, BASE + "data:\n  train: other/\n"))


def test_merge_keys_may_be_overridden_explicitly(tmp_path: Path):
    text = "defaults: &d {lr: 1.0e-4, batch_size: 2}\n"  # an anchor parses; the unknown key is then reported
    path = write(tmp_path, BASE + "train:\n  <<: {lr: 1.0e-4, batch_size: 2}\n  lr: 3.0e-4\n")
    assert load_recipe(path).train.lr == 3.0e-4
    with pytest.raises(RecipeError, match="unknown key 'defaults'"):
        load_recipe(write(tmp_path, BASE + text))


def test_an_alias_bomb_is_refused_quickly(tmp_path: Path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]  # 10^10 values
    start = time.monotonic()
    with pytest.raises(RecipeError, match="aliases"):
        load_recipe(write(tmp_path, "\n".join(lines) + "\n" + BASE))
    assert time.monotonic() - start < 10  # not a timing goal: a bomb that expanded would never get here


def test_deep_nesting_and_huge_files_are_refused(tmp_path: Path):
    with pytest.raises(RecipeError, match="too deeply"):
        load_recipe(write(tmp_path, BASE + "x: " + "[" * 20000 + "]" * 20000 + "\n"))
    with pytest.raises(RecipeError, match="small file"):
        load_recipe(write(tmp_path, BASE + "#" * (2 << 20) + "\n"))


def test_remote_code_from_a_file_alone_is_refused(tmp_path: Path):
    path = write(tmp_path, BASE + "model:\n  trust_remote_code: true\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert f"{path}:5" in str(err.value) and "--trust-remote-code" in str(err.value)
    assert load_recipe(path, ["model.trust_remote_code=true"]).model.trust_remote_code
    off = load_recipe(path, ["model.trust_remote_code=true", "model.trust_remote_code=false"])
    assert not off.model.trust_remote_code  # the last override is the one that counts


def test_cli_flag_confirms_remote_code(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = write(tmp_path, BASE + "model:\n  trust_remote_code: true\n")
    assert main(["validate", str(path), "--schema-only"]) == 2
    assert "trust_remote_code" in capsys.readouterr().err
    assert main(["validate", str(path), "--schema-only", "--trust-remote-code"]) == 0


def test_a_target_that_matches_nothing_exits_2(capsys: pytest.CaptureFixture):
    recipe = Path(__file__).parents[1] / "recipes" / "quickstart" / "alpaca.yaml"
    assert main(["validate", str(recipe), "adapter.target_modules=[gate_proj]"]) == 2
    assert "gate_proj" in capsys.readouterr().err
