"""Two nodes rehearsed on one CPU machine: ``accelerate launch --num_machines 2 --machine_rank 0|1`` on
127.0.0.1 (one gloo process per "node"), and torchrun's own two-process launch of ``python -m sc2tune``.

Reference: one plain process with twice the per-process batch. With a shared data cache folder the prepared
rows are built once for the whole job: exactly one ``data: cache miss`` log line across both ranks, the other
rank logs a hit (``sc2tune.data.store.build_once``'s file lock makes it wait, then read).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train

pytestmark = pytest.mark.slow

# one packed row of 64 tokens per snippet: 3 steps x 4 rows stay inside the first epoch (a new epoch's
# shuffle is drawn by each sampler its own way)
SNIPPETS = [f"def h{i}(x):\n    acc = 1\n    for k in range({i % 4 + 2}):\n        acc = acc * x + k - {i}\n    return acc\n"
            for i in range(16)]
STEPS = 3
MISS = "data: cache miss"
HIT = "data: cache hit"


def _recipe(model_dir: str, tmp_path: Path, name: str, batch_size: int, cache: Path) -> dict:
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        for i, text in enumerate(SNIPPETS):
            (code / f"m{i}.py").write_text(text)
    return {
        "model": {"name_or_path": model_dir},
        "task": "fim",
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0},  # no dropout: each rank would draw its own masks
        "data": {"train": str(code), "eval": None, "max_length": 64, "packing": True, "cache_dir": str(cache)},
        "train": {"max_steps": STEPS, "batch_size": batch_size, "lr": 2e-3, "logging_steps": 1,
                  "save_steps": 100, "warmup_ratio": 0.0, "seed": 11},
        "output_dir": str(tmp_path / name),
    }


def _losses(run: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def one(tiny_model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> dict[int, float]:
    """Per-step losses of one process with batch 4 (its own cache folder: the launched runs build theirs)."""
    tmp_path = tmp_path_factory.mktemp("single")
    train(recipe_from_dict(_recipe(tiny_model_dir, tmp_path, "single", 4, tmp_path / "cache-single")),
          show_progress=False)
    return _losses(tmp_path / "single")


def _assert_same_losses(one: dict[int, float], two: dict[int, float]) -> None:
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    for step in one:
        assert abs(two[step] - one[step]) <= 1e-4, (step, one[step], two[step])


def test_two_nodes_match_one_process_and_build_data_once(one: dict[int, float], tiny_model_dir: str,
                                                        tmp_path: Path) -> None:
    shared = tmp_path / "cache-shared"  # a shared file system's cache folder, as data.cache_dir on a cluster
    path = tmp_path / "two-nodes.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_model_dir, tmp_path, "two-nodes", 2, shared)))
    port = str(_free_port())
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
             "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
             "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
             "-m", "sc2tune", "train", str(path), "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
        for rank in (0, 1)
    ]
    logs = []
    for node in nodes:
        try:
            out, _ = node.communicate(timeout=540)
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            raise
        logs.append(out)
        assert node.returncode == 0, out[-3000:]
    _assert_same_losses(one, _losses(tmp_path / "two-nodes"))
    assert (tmp_path / "two-nodes" / "adapter" / "adapter_model.safetensors").is_file()
    # the prepared rows: one build for the job (shared cache), the other node read them
    misses = [log.count(MISS) for log in logs]
    assert sum(misses) == 1, misses
    assert sum(log.count(HIT) for log in logs) == 1
    assert len([p for p in shared.iterdir() if (p / "meta.json").is_file()]) == 1


def test_torchrun_runs_python_m_sc2tune(one: dict[int, float], tiny_model_dir: str, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m sc2tune train``: accelerate's state reads torchrun's variables."""
    path = tmp_path / "torchrun.yaml"
    path.write_text(yaml.safe_dump(_recipe(tiny_model_dir, tmp_path, "torchrun", 2, tmp_path / "cache-tr")))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
         "-m", "sc2tune", "train", str(path), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), timeout=540)
    assert run.returncode == 0, run.stdout[-3000:]
    _assert_same_losses(one, _losses(tmp_path / "torchrun"))
    assert run.stdout.count(MISS) == 1
