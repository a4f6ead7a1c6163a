"""Trainer callbacks: atomic checkpoints, metrics log, progress bar, NaN guard hook and SIGTERM (preemption)."""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from sc2tune.atomic import publish, remove
from sc2tune.runs.layout import CHECKPOINT_STAGING

log = logging.getLogger(__name__)


class AtomicCheckpointCallback(TrainerCallback):
    """Checkpoints renamed into place only when complete.

    transformers writes checkpoint N into ``args.output_dir``, the staging folder ``checkpoints/.staging``
    (:class:`sc2tune.runs.RunFolder`; with any other ``output_dir`` this callback does nothing and checkpoints
    are transformers' own), every process its part; then, on ``on_save``, once every process is done,
    the main process flushes it and renames it to ``checkpoints/checkpoint-N`` (:func:`sc2tune.atomic.publish`,
    replacing one of the same step), empties the staging folder and keeps the newest ``args.save_total_limit``
    checkpoints there (transformers' ``rotate_checkpoints``, by step). A kill at any moment leaves the
    checkpoints already in place whole; what it leaves in the staging folder is removed when training begins
    again, and at its end.
    """

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201 - TrainerCallback's
        staging = checkpoint_staging(args)
        if staging is not None and args.should_save:
            _empty(staging)  # a killed run's half checkpoint

    def on_save(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        staging = checkpoint_staging(args)
        if staging is None:
            return
        accelerator = self.trainer.accelerator
        accelerator.wait_for_everyone()
        if args.should_save:
            name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            publish(staging / name, staging.parent / name, replace=True)
            _empty(staging)
            rotate_checkpoints(output_dir=str(staging.parent), save_total_limit=args.save_total_limit,
                               use_mtime=False)
        accelerator.wait_for_everyone()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        staging = checkpoint_staging(args)
        if staging is not None and args.should_save:
            remove(staging)


def checkpoint_staging(args: Any) -> Path | None:
    """``args.output_dir`` when it is a run's checkpoint staging folder (named ``.staging``), else None."""
    staging = Path(args.output_dir)
    return staging if staging.name == CHECKPOINT_STAGING else None


def _empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (kept: transformers made it and writes the next checkpoint there)."""
    if folder.is_dir():
        for entry in folder.iterdir():
            remove(entry)


class MetricsFileCallback(TrainerCallback):
    """Appends one JSON object per log event to ``metrics.jsonl``: ``{"step", "loss", ...}`` or eval lines."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        # NaN/inf are not JSON: written as null
        record.update({k: finite_or_none(v) if isinstance(v, float) else v
                       for k, v in logs.items() if isinstance(v, (int, float, str))})
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class ProgressCallback(TrainerCallback):
    """A rich progress bar with loss, learning rate, tokens/s and ETA (main process only)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task_id = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self.progress.start()
        self.task_id = self.progress.add_task("train", total=state.max_steps, completed=state.global_step,
                                              loss="-", lr="-", tps="-")

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.update(self.task_id, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.progress is None or not logs:
            return
        fields: dict[str, Any] = {}
        if "loss" in logs:
            fields["loss"] = f"{logs['loss']:.4f}"
        if "learning_rate" in logs:
            fields["lr"] = f"{logs['learning_rate']:.2e}"
        if "tokens_per_second" in logs:
            fields["tps"] = f"{logs['tokens_per_second']:,.0f}"
        if "eval_loss" in logs:
            self.progress.console.print(
                f"step {state.global_step}: "
                + "  ".join(f"{k}={v:.4f}" for k, v in logs.items() if k.startswith("eval_") and isinstance(v, float)
                            and "runtime" not in k and "per_second" not in k)
            )
        self.progress.update(self.task_id, **fields)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class NanGuardCallback(TrainerCallback):
    """Before each optimizer step, lets the trainer drop a window whose loss was not finite."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.drop_step_if_poisoned()


class PreemptionCallback(TrainerCallback):
    """On SIGTERM: finish the current step, save a checkpoint, stop; every rank agrees on the decision."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self.requested = False
        self.preempted = False
        self._previous = None

    def _handler(self, signum, frame):
        self.requested = True
        log.warning("SIGTERM received: saving a checkpoint at the end of this step, then stopping")

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor(1.0 if self.requested else 0.0, device=self.trainer.accelerator.device)
        if self.trainer.accelerator.num_processes > 1:
            flag = self.trainer.accelerator.reduce(flag, reduction="sum")
        if flag.item() > 0:
            self.preempted = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


class ThroughputCallback(TrainerCallback):
    """Wall time (and process CPU time) spent inside optimizer steps (forward, backward, update); evaluation
    and saving excluded. CPU time is the steadier figure on a shared machine, where wall time includes waiting."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer
        self._started: float | None = None
        self._cpu_started = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        if self._started is not None:
            self.trainer.step_seconds += time.perf_counter() - self._started
            self.trainer.step_cpu_seconds += time.process_time() - self._cpu_started
            self._started = None


def finite_or_none(value: float | None) -> float | None:
    """JSON-safe float."""
    return None if value is None or not math.isfinite(value) else value
