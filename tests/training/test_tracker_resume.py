"""Resuming with trackers when what was recorded cannot be continued: the run still trains and logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest


def test_a_recorded_mlflow_run_that_is_gone_gives_a_new_run(tmp_path: Path, monkeypatch, caplog) -> None:
    mlflow = pytest.importorskip("mlflow")
    from sc2tune.training.trackers import tracker_session

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    out.mkdir()
    gone = "0" * 32  # recorded against another store, or deleted since
    (out / "trackers.json").write_text(json.dumps({"mlflow": {"tracking_uri": "file:///elsewhere", "run_id": gone}}))
    with caplog.at_level(logging.WARNING, logger="sc2tune.training.trackers"), \
            tracker_session(("mlflow",), "run", out, main_process=True, resume=True):
        run_id = mlflow.active_run().info.run_id
    assert run_id != gone and "cannot be reopened" in caplog.text
    assert mlflow.MlflowClient().get_run(run_id).info.run_name == "run"  # a new run, in this store


def test_resuming_without_a_checkpoint_starts_tensorboard_over(tmp_path: Path) -> None:
    """A resume that finds no checkpoint trains from step 0 (metrics.jsonl is emptied): the old run's TensorBoard
    steps are dropped too (read back with TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from sc2tune.training.run import _add_tensorboard

    old = SummaryWriter(log_dir=str(tmp_path))
    for step in (1, 2, 3):
        old.add_scalar("train/loss", 9.0, step)
    old.close()

    class Trainer:  # what _add_tensorboard uses of a Trainer
        def add_callback(self, callback) -> None:
            self.writer = callback.tb_writer

    trainer = Trainer()
    _add_tensorboard(trainer, tmp_path, None, resume=True)
    trainer.writer.add_scalar("train/loss", 1.0, 1)
    trainer.writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1.0)]
