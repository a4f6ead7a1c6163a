"""What the multi-process tests share: a free port per launch, a launched process's environment, the launch
command lines (``accelerate launch``, ``torchrun``), a run's per-step losses, and the small FIM recipe the
distributed tests train (one process with batch 4 against 2 processes with batch 2).

Every launch gets a port of its own (:func:`free_port`): accelerate's and torchrun's default 29500 collides when
two test runs share a machine. The recipe is one dictionary, :func:`fim_recipe`; its one-process reference run
is trained once per session (``tests/conftest.py``, fixture ``reference_run``) and read by every test that
compares a launch against it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml

#: The repository root (this file is tests/launching.py).
REPO = Path(__file__).resolve().parents[1]

#: 40 short functions; with ``max_length: 64`` and packing each is one packed row, so the reference's
#: STEPS x 4 rows stay inside the first epoch (a new epoch's shuffle is drawn by each sampler its own way).
SNIPPETS = [
    f"def f{i}(x):\n    total = 0\n    for k in range({i % 5 + 2}):\n        total += x * k + {i}\n    return total\n"
    for i in range(40)
]
#: Optimizer steps of the shared recipe (a resume test kills a run after step 3 and resumes from checkpoint-2,
#: with steps to spare before the run would finish).
STEPS = 6
#: Steps of the launches that need no more: step 1's loss is the untouched model's, steps 2 and 3 show one and
#: two updates, under a learning rate that decays from step to step (no warm-up: a warm-up step has rate 0).
SHORT_STEPS = 3


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS's pick), for one launch's rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    """This environment for a launched process: unbuffered output, one OpenMP thread per process (2 processes
    on a 2-core machine), this checkout's sc2tune first on the path (a launched script's own folder is its
    ``sys.path[0]``, not the repository: without it the installed package would be imported), plus ``extra``."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}


def accelerate_command(*args: str, config: Path | None = None, processes: int = 2) -> list[str]:
    """``accelerate launch`` of ``args`` (a ``-m module ...`` or a script) with a free port: with ``config``
    the config file decides the engine (``--config_file``); without, plain DDP on CPU (``--multi_gpu`` without
    GPUs is accelerate's MULTI_CPU: gloo) with ``processes`` processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(free_port())]
    if config is not None:
        command += ["--config_file", str(config)]
    else:
        command += ["--multi_gpu", "--num_processes", str(processes), "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*command, *args]


def train_command(recipe: Path, *extra: str) -> list[str]:
    """The arguments after the launcher for ``sc2tune train RECIPE``."""
    return ["-m", "sc2tune", "train", str(recipe), "--no-progress", *extra]


def run_ok(command: list[str], *, timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    """Run ``command`` with :func:`launch_env`; fail the test with the end of its stderr unless it exits 0."""
    done = subprocess.run(command, capture_output=True, text=True, env=launch_env(**env), timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def losses(run_dir: Path) -> dict[int, float]:
    """``{step: loss}`` of the training-loss lines of ``run_dir/metrics.jsonl``."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows if "loss" in row}


def assert_same_losses(one: dict[int, float], two: dict[int, float], tolerance: float = 1e-4) -> None:
    """Both runs logged the same steps 1..N and every loss agrees within ``tolerance`` (absolute)."""
    assert sorted(one) == sorted(two) == list(range(1, len(one) + 1))
    for step in one:
        assert abs(two[step] - one[step]) <= tolerance, (step, one[step], two[step])


def write_code(folder: Path) -> Path:
    """``folder/code`` with one file per snippet (written once; later calls reuse it)."""
    code = folder / "code"
    if not code.exists():
        code.mkdir(parents=True)
        for i, text in enumerate(SNIPPETS):
            (code / f"m{i}.py").write_text(text)
    return code


def fim_recipe(folder: Path, name: str, *, batch_size: int, code: Path | None = None, **changes: object) -> dict:
    """The distributed tests' recipe: FIM LoRA on the built-in tiny model in float32, no dropout (each rank
    would draw its own masks), STEPS steps, no checkpoint (``train.save_steps`` where a test reads one), output
    in ``folder/name``, data from ``code`` (default: :func:`write_code` in ``folder``).

    ``changes`` are dotted keys (``**{"data.cache_dir": ...}``, ``**{"adapter.method": "full"}``). Nothing that
    changes the losses may differ between a launch and the reference it is compared with, except how the batch
    of 4 rows is split over processes (where checkpoints are written and where the data is cached do not)."""
    recipe: dict = {
        "model": {"dtype": "float32"},
        "task": "fim",
        "adapter": {"dropout": 0.0},  # rank and alpha: the defaults (docs/several-gpus.md counts their elements)
        "data": {"train": str(code or write_code(folder)), "eval": None, "max_length": 64, "packing": True},
        "train": {"max_steps": STEPS, "batch_size": batch_size, "lr": 2e-3, "logging_steps": 1, "save_steps": 10_000,
                  "warmup_ratio": 0.0, "seed": 7, "max_grad_norm": 1.0},
        "output_dir": str(folder / name),
    }
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        section = recipe
        for part in parents:
            section = section.setdefault(part, {})
        section[key] = value
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    """``recipe`` as a YAML file at ``path`` (what a launched ``sc2tune train`` reads)."""
    path.write_text(yaml.safe_dump(recipe))
    return path
