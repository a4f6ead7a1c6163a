"""``--resume`` from a damaged run folder: the newest intact checkpoint, or an error naming the file; never a
traceback, never a run that trains nothing and "succeeds" (``sc2tune.training.resume``)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from sc2tune.errors import UserError
from sc2tune.training.resume import resume_checkpoint, trim_metrics


def _checkpoint(root: Path, step: int, state: object | None = None) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    state = {"global_step": step, "log_history": []} if state is None else state
    (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    save_file({"w": torch.zeros(2)}, folder / "adapter_model.safetensors")
    return folder


def test_a_broken_newest_checkpoint_is_skipped_named_and_moved_aside(tmp_path: Path, caplog):
    good = _checkpoint(tmp_path, 4)
    (tmp_path / "checkpoint-999").mkdir()  # empty
    (tmp_path / "checkpoint-999.broken").mkdir()  # moved aside by an earlier resume
    with caplog.at_level(logging.WARNING):
        assert resume_checkpoint(tmp_path, main_process=True) == (str(good), 4)
    assert "skipped checkpoint-999" in caplog.text and "it is empty" in caplog.text
    # out of transformers' checkpoint-N pattern, so save_total_limit's rotation never keeps it over a good one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4", "checkpoint-999.broken",
                                                          "checkpoint-999.broken-2"]


@pytest.mark.parametrize(("state", "reason"), [
    ("{not json", "not JSON"),
    ({"global_step": 1e12}, "global_step is 1000000000000.0, not the step 8"),
    ({"global_step": 9}, "global_step is 9, not the step 8"),
    ({"global_step": 8, "favourite": 1}, "keys transformers' TrainerState does not have: favourite"),
])
def test_no_intact_checkpoint_is_an_error_naming_the_file(tmp_path: Path, state: object, reason: str):
    bad = _checkpoint(tmp_path, 8, state)
    with pytest.raises(UserError, match=rf"{bad / 'trainer_state.json'}: .*{reason}"):
        resume_checkpoint(tmp_path, main_process=True)
    assert bad.is_dir()  # nothing moved when nothing can be resumed


def test_trimming_drops_lines_that_are_not_metric_records(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    lines = ['{"step": 1, "loss": 2.0}', '{"step": "two", "loss": 1.0}', '{"step": 2.5}', "[1]",
             '{"eval_loss": 1.0}', '{"step": 3, "loss": 1.5}', '{"step": 5, "loss": 1.0}', '{"step": 6, "lo']
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"step": 2, "x": "\xff"}\n')
    trim_metrics(path, 4)
    assert path.read_text().splitlines() == [lines[0], lines[4], lines[5]]


@pytest.mark.slow
def test_resume_from_a_damaged_run_folder_through_the_cli(tmp_path: Path, run_cli):
    """A real run, then damage as found in the wild: an empty checkpoint-999, a non-numeric step in
    metrics.jsonl (resumed from checkpoint-4 with a warning); then a global_step of 1e12 in the only intact
    checkpoint left (an error naming it, exit 1, no traceback; before: it trained nothing and succeeded).

    The first run is trained in this process (it only makes the folder) and the refused resume runs the CLI in
    this process (``run_cli``: an uncaught exception fails the test as a traceback would); the resume that
    trains is a real ``python -m sc2tune`` process, whose stderr carries the warnings."""
    code = tmp_path / "code"
    code.mkdir()
    for i in range(12):
        (code / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i % 3}\n")
    recipe = {"task": "fim", "data": {"train": str(code), "eval": None, "max_length": 64, "packing": True},
              "train": {"max_steps": 4, "batch_size": 2, "save_steps": 2, "logging_steps": 1},
              "output_dir": str(tmp_path / "run")}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"

    def cli(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "sc2tune", "train", str(tmp_path / "r.yaml"), "--no-progress",
                               *extra], capture_output=True, text=True, timeout=600)

    from sc2tune.recipe import recipe_from_dict
    from sc2tune.training import train

    train(recipe_from_dict(recipe), show_progress=False)
    (run / "checkpoints" / "checkpoint-999").mkdir()
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": "abc", "loss": 1.0}\n')
    resumed = cli("--resume")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr
    assert "skipped checkpoint-999" in resumed.stderr and "it is empty" in resumed.stderr
    assert "abc" not in (run / "metrics.jsonl").read_text()

    for folder in (run / "checkpoints").glob("checkpoint-*[0-9]"):
        state = folder / "trainer_state.json"
        state.write_text(state.read_text().replace('"global_step": 4', '"global_step": 1e12')
                         .replace('"global_step": 2', '"global_step": 1e12'))
    broken = run_cli("train", str(tmp_path / "r.yaml"), "--no-progress", "--resume")
    assert broken.returncode == 1, broken.stderr
    assert "trainer_state.json: global_step is 1000000000000.0" in broken.stderr


@pytest.mark.parametrize("text", ["{cut", "[1, 2]", '{"prepared": 7}'])
def test_a_malformed_data_record_is_looked_up_by_key_with_a_warning(tmp_path: Path, caplog, text: str):
    from sc2tune.runs import RunFolder
    from sc2tune.training.run import _pinned_data

    RunFolder(tmp_path).data_record.write_text(text)
    with caplog.at_level(logging.WARNING):
        assert _pinned_data(tmp_path) == (None, None)  # before: json.loads' traceback, or .get of a list
    assert "looking" in caplog.text
