"""Two-process data parallelism on the tiny GPTBigCode: ``accelerate launch --multi_gpu --num_processes 2`` on a
CPU machine (gloo), batch 2 per process, gives the losses of one process with batch 4 (and the run's summary
counts every step)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from launching import accelerate_command, fim_recipe, losses, run_ok, train_command, write_recipe

from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train

pytestmark = pytest.mark.slow

STEPS = 4


def _recipe(base: Path, tmp_path: Path, name: str, batch_size: int) -> dict:
    """``launching.fim_recipe`` (no dropout: each rank would draw its own masks) on the GPTBigCode folder;
    4 steps x 4 rows of its 40 one-row snippets stay inside the first epoch."""
    return fim_recipe(tmp_path, name, batch_size=batch_size, **{
        "model.name_or_path": str(base), "train.max_steps": STEPS, "train.save_steps": 100})


def test_two_process_ddp_matches_one_process(gptbigcode_dir: Path, tmp_path: Path) -> None:
    train(recipe_from_dict(_recipe(gptbigcode_dir, tmp_path, "single", 4)), show_progress=False)
    path = write_recipe(tmp_path / "double.yaml", _recipe(gptbigcode_dir, tmp_path, "double", 2))
    run_ok(accelerate_command(*train_command(path)))
    one, two = losses(tmp_path / "single"), losses(tmp_path / "double")
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    assert json.loads((tmp_path / "double" / "summary.json").read_text())["global_step"] == STEPS
    assert (tmp_path / "double" / "adapter" / "adapter_model.safetensors").is_file()
