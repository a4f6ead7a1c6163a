"""Exact resume after SIGKILL, SIGTERM preemption and the NaN guard.

2-process DDP against one process (gloo on CPU) is in test_multinode.py (torchrun and two accelerate "nodes" on the
tiny StarCoder2, against the session's shared one-process run) and tests/gptbigcode/test_ddp.py
(``accelerate launch --multi_gpu --num_processes 2``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from launching import losses

from sc2tune.errors import UserError
from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train
from sc2tune.training.trainer import NonFiniteLossError, Sc2Trainer

pytestmark = pytest.mark.slow

SNIPPETS = [
    f"def f{i}(x):\n    total = 0\n    for k in range({i % 5 + 2}):\n        total += x * k + {i}\n    return total\n"
    for i in range(40)
]


def make_recipe(tmp_path: Path, name: str = "run", dropout: float = 0.1, **train_overrides) -> Path:
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        for i, text in enumerate(SNIPPETS):
            (code / f"m{i}.py").write_text(text)
    recipe = {
        "task": "fim",
        "data": {"train": str(code), "eval": None, "max_length": 64, "packing": True},
        "train": {"max_steps": 14, "batch_size": 2, "lr": 2e-3, "logging_steps": 1, "save_steps": 4,
                  "warmup_ratio": 0.1, "seed": 7, **train_overrides},
        "adapter": {"dropout": dropout},  # dropout on: resume must restore the RNG too
        "output_dir": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text("# test recipe\n" + yaml.safe_dump(recipe))
    return path


class Run:
    """``sc2tune train ARGS`` in a subprocess; its output goes to files (a pipe nobody drains can fill up
    and stall the run)."""

    def __init__(self, log_dir: Path, *args: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.err_path = log_dir / f"stderr-{time.monotonic_ns()}.txt"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.err_path.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "sc2tune", "train", *args, "--no-progress"],
                                         stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()


def train_here(recipe: Path, *, resume: bool = False) -> None:
    """The same run in this process (where a separate process is not what the test is about)."""
    train(recipe_from_dict(yaml.safe_load(recipe.read_text())), resume=resume, show_progress=False)


def wait_for_step(run_dir: Path, step: int, run: Run, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if run.proc.poll() is not None:
            raise AssertionError(f"run ended early: {run.stderr}")
        if (run_dir / "metrics.jsonl").is_file() and step in losses(run_dir):
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_resume_after_sigkill_gives_the_same_losses(tmp_path):
    straight = make_recipe(tmp_path, "straight")
    train_here(straight)

    killed = make_recipe(tmp_path, "killed")
    run_dir = tmp_path / "killed"
    run = Run(tmp_path / "logs", str(killed))
    wait_for_step(run_dir, 6, run)  # a checkpoint exists at step 4; steps 5-6 will be redone
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait()
    assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
    assert not (run_dir / "adapter").exists()
    with (run_dir / "metrics.jsonl").open("a") as handle:  # a line cut short by the kill
        handle.write('{"step": 7, "loss": 1')

    train_here(killed, resume=True)
    expected, got = losses(tmp_path / "straight"), losses(run_dir)
    assert sorted(got) == list(range(1, 15))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    # TensorBoard (report_to's default) as TensorBoard reads it: one run in tensorboard/, each step once, the
    # killed run's steps 5-6 replaced by the resumed run's
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 15))
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([got[s] for s in range(1, 15)], rel=1e-6)
    assert [p.name for p in (run_dir / "tensorboard").iterdir() if p.is_dir()] == []


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    recipe = make_recipe(tmp_path, "term", save_steps=100)
    run_dir = tmp_path / "term"
    run = Run(tmp_path / "logs", str(recipe))
    wait_for_step(run_dir, 3, run)
    run.proc.send_signal(signal.SIGTERM)
    code = run.proc.wait(timeout=120)
    stderr = run.stderr
    assert code == 143, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    saved = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
    assert len(saved) == 1 and int(saved[0].name.split("-")[1]) >= 3
    train_here(recipe, resume=True)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_nan_loss_is_skipped_then_stops_with_last_checkpoint_intact(tmp_path, monkeypatch):
    original = Sc2Trainer.compute_loss
    poisoned_steps = {3}  # one isolated bad step: skipped and counted
    calls = {"n": 0}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = original(self, model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            calls["n"] += 1
            if self.state.global_step + 1 in poisoned_steps or self.state.global_step + 1 >= 9:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(Sc2Trainer, "compute_loss", compute_loss)
    recipe = recipe_from_dict(yaml.safe_load(make_recipe(tmp_path, "nan", save_steps=4, nan_patience=3).read_text()))
    snapshots = {}

    original_drop = Sc2Trainer.drop_step_if_poisoned

    def drop(self):
        snapshots[self.state.global_step + 1] = {n: p.detach().clone() for n, p in self.model.named_parameters()
                                                 if p.requires_grad}
        return original_drop(self)

    monkeypatch.setattr(Sc2Trainer, "drop_step_if_poisoned", drop)
    with pytest.raises(NonFiniteLossError) as err:
        train(recipe, show_progress=False)
    assert isinstance(err.value, UserError) and "resume" in str(err.value)
    run_dir = Path(recipe.output_dir)
    # steps 9, 10, 11 were poisoned: the run stopped at the third; checkpoint-8 is the last good one
    assert (run_dir / "checkpoints" / "checkpoint-8" / "adapter_model.safetensors").is_file()
    assert not (run_dir / "adapter").exists()
    # the skipped step 3 did not change any weight
    after_3 = snapshots[4]
    for name, before in snapshots[3].items():
        assert torch.equal(before, after_3[name]), name
    assert any(not torch.equal(snapshots[4][n], snapshots[5][n]) for n in snapshots[4])
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(v == v for r in logged for k, v in r.items() if k == "loss")  # no NaN reached the log
    assert max(r.get("skipped_steps", 0) for r in logged) >= 1
