"""Two nodes rehearsed on one CPU machine: ``accelerate launch --num_machines 2 --machine_rank 0|1`` on
127.0.0.1 (one gloo process per "node"), and torchrun's own two-process launch of ``python -m sc2tune``.

Reference: one plain process with twice the per-process batch (``short_reference_run``,
tests/training/conftest.py).
With a shared data cache folder the prepared rows are built once for the whole job: exactly one
``data: cache miss`` log line across both ranks, the other rank logs a hit (``sc2tune.data.store.build_once``'s
file lock makes it wait, then read).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from launching import SHORT_STEPS, assert_same_losses, free_port, launch_env, losses, run_ok, train_command

pytestmark = pytest.mark.slow

MISS = "data: cache miss"
HIT = "data: cache hit"


def test_two_nodes_match_one_process_and_build_data_once(short_reference_run, tmp_path: Path) -> None:
    shared = tmp_path / "cache-shared"  # a shared file system's cache folder, as data.cache_dir on a cluster
    path = short_reference_run.recipe_file(tmp_path, "two-nodes", **{"data.cache_dir": str(shared)})
    port = str(free_port())
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
             "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
             "--main_process_port", port, "--mixed_precision", "no", "--dynamo_backend", "no",
             *train_command(path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=launch_env())
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
    assert_same_losses(short_reference_run.losses(), losses(tmp_path / "two-nodes"))
    assert (tmp_path / "two-nodes" / "adapter" / "adapter_model.safetensors").is_file()
    # the prepared rows: one build for the job (shared cache), the other node read them
    misses = [log.count(MISS) for log in logs]
    assert sum(misses) == 1, misses
    assert sum(log.count(HIT) for log in logs) == 1
    assert len([p for p in shared.iterdir() if (p / "meta.json").is_file()]) == 1


def test_torchrun_runs_python_m_sc2tune(short_reference_run, tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m sc2tune train``: accelerate's state reads torchrun's variables; 2 DDP
    processes x batch 2 give one process's per-step losses with batch 4 (rel 1e-5) and a whole run."""
    path = short_reference_run.recipe_file(tmp_path, "torchrun", **{"data.cache_dir": str(tmp_path / "cache-tr")})
    run = run_ok([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                  "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *train_command(path)],
                 timeout=540)
    assert run.stdout.count(MISS) + run.stderr.count(MISS) == 1
    one, two = short_reference_run.losses(), losses(tmp_path / "torchrun")
    assert_same_losses(one, two)
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    assert json.loads((tmp_path / "torchrun" / "summary.json").read_text())["global_step"] == SHORT_STEPS
    assert (tmp_path / "torchrun" / "adapter" / "adapter_model.safetensors").is_file()
