"""recipes/slurm/train.sbatch builds, on every node, the launch command that test_multinode.py runs for real.

The script is run with stand-ins on PATH: ``scontrol`` names two hosts, ``srun`` runs its command once per node
with ``SLURM_NODEID`` set as SLURM does, and ``accelerate`` / ``torchrun`` write the arguments they were given.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "recipes" / "slurm" / "train.sbatch"

RECORD = """#!/bin/bash
python3 -c 'import json, os, sys; print(json.dumps([os.path.basename(sys.argv[1])] + sys.argv[2:]))' "$0" "$@" \
    >> "$STUB_LOG.$SLURM_NODEID"
"""
SRUN = """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
for ((k = 0; k < SLURM_NNODES; k++)); do SLURM_NODEID=$k "$@" || exit $?; done
"""
SCONTROL = """#!/bin/bash
[[ "$*" == "show hostnames $SLURM_JOB_NODELIST" ]] || exit 3
printf 'gpu-node-7\\ngpu-node-8\\n'
"""


def _run(tmp_path: Path, scontrol: str = SCONTROL, **env: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"accelerate": RECORD, "torchrun": RECORD, "srun": SRUN, "scontrol": scontrol}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "argv"
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_LOG": str(log),
                "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu-node-[7-8]", **env}
    done = subprocess.run(["bash", str(SCRIPT), "recipes/r.yaml", "train.max_steps=5"], env=full_env,
                          capture_output=True, text=True, timeout=60)
    argv = [json.loads(Path(f"{log}.{k}").read_text()) for k in range(2) if Path(f"{log}.{k}").exists()]
    return done, argv


def test_accelerate_command_per_node(tmp_path: Path) -> None:
    done, argv = _run(tmp_path, GPUS_PER_NODE="4")
    assert done.returncode == 0, done.stderr
    assert argv == [
        ["accelerate", "launch", "--config_file", "recipes/accelerate/fsdp.yaml", "--num_machines", "2",
         "--machine_rank", str(k), "--num_processes", "8", "--main_process_ip", "gpu-node-7",
         "--main_process_port", "29500", "--rdzv_backend", "static",
         "-m", "sc2tune", "train", "recipes/r.yaml", "train.max_steps=5"]
        for k in range(2)
    ]


def test_torchrun_command_per_node(tmp_path: Path) -> None:
    done, argv = _run(tmp_path, LAUNCHER="torchrun", MAIN_PORT="29611")
    assert done.returncode == 0, done.stderr
    assert argv == [
        ["torchrun", "--nnodes", "2", "--node_rank", str(k), "--nproc_per_node", "8", "--master_addr",
         "gpu-node-7", "--master_port", "29611", "-m", "sc2tune", "train", "recipes/r.yaml", "train.max_steps=5"]
        for k in range(2)
    ]


@pytest.mark.parametrize(("env", "message"), [({"LAUNCHER": "mpirun"}, "LAUNCHER must be accelerate or torchrun")])
def test_bad_setting_is_refused(tmp_path: Path, env: dict[str, str], message: str) -> None:
    done, argv = _run(tmp_path, **env)
    assert done.returncode == 2 and message in done.stderr and argv == []


def test_recipe_argument_is_required(tmp_path: Path) -> None:
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "SLURM_NNODES": "2"})
    assert done.returncode != 0 and "usage: sbatch --nodes N" in done.stderr


def test_a_long_node_list_gives_its_first_host(tmp_path: Path) -> None:
    """A large job's host list is more than a pipe holds: the script must read it all (``| head -n 1`` under
    ``set -o pipefail`` stopped the script: scontrol, writing on after head exited, died of SIGPIPE)."""
    many = """#!/bin/bash
printf 'gpu-node-7\\n'
for ((i = 0; i < 20000; i++)); do echo "gpu-node-x$i"; done
"""
    done, argv = _run(tmp_path, scontrol=many)
    assert done.returncode == 0, done.stderr
    assert [a[a.index("--main_process_ip") + 1] for a in argv] == ["gpu-node-7", "gpu-node-7"]


def test_a_failing_scontrol_stops_the_script(tmp_path: Path) -> None:
    done, argv = _run(tmp_path, scontrol="#!/bin/bash\nexit 4\n")
    assert done.returncode != 0 and argv == []
