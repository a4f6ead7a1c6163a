"""``sc2tune.reporting.read_metrics``: a metrics.jsonl line whose step is not a whole number is an error naming the
file and line (it used to escape as ``int()``'s ValueError/TypeError traceback, or be truncated: 2.5 -> 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.errors import DataError
from sc2tune.reporting import read_metrics


def _write(tmp_path: Path, rows: list[object]) -> Path:
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("step", ["abc", 2.5, True, None, [2], {"n": 2}])
def test_a_step_that_is_not_a_whole_number_names_the_file_and_line(tmp_path: Path, step: object) -> None:
    path = _write(tmp_path, [{"step": 1, "loss": 2.0}, {"epoch": 1.0}, {"step": step, "loss": 1.0}])
    with pytest.raises(DataError) as err:
        read_metrics(path)
    assert str(err.value).startswith(f"{path}:3: step is {json.dumps(step)}, not a whole number")
    assert "fix or delete that line" in err.value.hint


def test_whole_number_steps_are_read_as_ints(tmp_path: Path) -> None:
    """Hand-written expectation: 3.0 is step 3; a row without a step is skipped, as before."""
    path = _write(tmp_path, [{"step": 3.0, "loss": 1.5}, {"loss": 9.0}, {"step": 4, "eval_loss": 1.25}])
    assert read_metrics(path) == ([(3, 1.5)], [(4, 1.25)])
    assert all(isinstance(step, int) for series in read_metrics(path) for step, _ in series)
