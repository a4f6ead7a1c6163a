"""One run per output folder: a second train into a folder in use stops with a clear error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sc2tune.errors import UserError
from sc2tune.recipe import load_recipe
from sc2tune.training import train

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).parents[2] / "recipes" / "quickstart" / "alpaca.yaml"


def test_a_second_run_into_a_busy_folder_is_refused_and_the_first_is_untouched(tmp_path: Path):
    out = tmp_path / "run"
    overrides = [f"output_dir={out}", "data.eval=null", "train.max_steps=100000", "train.save_steps=100000",
                 "train.logging_steps=1"]
    first = subprocess.Popen([sys.executable, "-m", "sc2tune", "train", str(RECIPE), *overrides, "--no-progress"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (out / "metrics.jsonl").is_file() or not (out / "metrics.jsonl").read_text().strip():
            assert first.poll() is None, "the first run stopped early"
            assert time.monotonic() < deadline, "the first run never started training"
            time.sleep(0.5)
        before = (out / "metrics.jsonl").read_text()
        with pytest.raises(UserError, match="being written by another sc2tune train"):
            train(load_recipe(RECIPE, overrides), resume=True, show_progress=False)
        assert (out / "metrics.jsonl").read_text().startswith(before)  # nothing of the second run in it
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # the kernel released the dead run's lock: the folder is usable again at once
    result = train(load_recipe(RECIPE, [*overrides[:2], "train.max_steps=1"]), resume=True, show_progress=False)
    assert result.global_step == 1


def test_a_failed_first_run_leaves_no_folder(tmp_path: Path):
    out = tmp_path / "run"
    with pytest.raises(UserError):
        train(load_recipe(RECIPE, [f"output_dir={out}", f"data.train={tmp_path / 'missing.jsonl'}"]),
              show_progress=False)
    assert not out.exists()
