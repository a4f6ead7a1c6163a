"""Two-process data parallelism on the tiny GPTBigCode: ``accelerate launch --multi_gpu --num_processes 2`` on a
CPU machine (gloo), batch 2 per process, gives the losses of one process with batch 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train

pytestmark = pytest.mark.slow

# one packed row of 64 tokens per snippet: 4 steps x 4 rows stay inside the first epoch (a new epoch's shuffle
# is drawn by each sampler its own way)
SNIPPETS = [f"def g{i}(x):\n    total = 0\n    for k in range({i % 5 + 2}):\n        total += x * k + {i}\n    return total\n"
            for i in range(20)]


def _recipe(base: Path, tmp_path: Path, name: str, batch_size: int) -> dict:
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        for i, text in enumerate(SNIPPETS):
            (code / f"m{i}.py").write_text(text)
    return {
        "model": {"name_or_path": str(base)},
        "task": "fim",
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},  # no dropout: each rank would draw its own masks
        "data": {"train": str(code), "eval": None, "max_length": 64, "packing": True},
        "train": {"max_steps": 4, "batch_size": batch_size, "lr": 2e-3, "logging_steps": 1, "save_steps": 100,
                  "warmup_ratio": 0.0, "seed": 7},
        "output_dir": str(tmp_path / name),
    }


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_two_process_ddp_matches_one_process(gptbigcode_dir: Path, tmp_path: Path) -> None:
    train(recipe_from_dict(_recipe(gptbigcode_dir, tmp_path, "single", 4)), show_progress=False)
    path = tmp_path / "double.yaml"
    path.write_text(yaml.safe_dump(_recipe(gptbigcode_dir, tmp_path, "double", 2)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    launch = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "sc2tune", "train", str(path), "--no-progress"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert launch.returncode == 0, launch.stderr[-3000:]
    one, two = _losses(tmp_path / "single"), _losses(tmp_path / "double")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    assert (tmp_path / "double" / "adapter" / "adapter_model.safetensors").is_file()
