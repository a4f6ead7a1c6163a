"""The README's main command: train, merge and infill on the built-in tiny model."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from sc2tune.demo import fresh_run_dir, quickstart

pytestmark = pytest.mark.slow


def test_quickstart_trains_merges_and_infills(tmp_path):
    result = quickstart(tmp_path, show_progress=False)
    assert result.run_dir == tmp_path / "quickstart"
    assert result.eval_loss_after < result.eval_loss_before
    merged = json.loads((result.merged_dir / "sc2tune_merge.json").read_text())
    assert merged["verification"]["passed"] is True
    AutoModelForCausalLM.from_pretrained(result.merged_dir)  # a plain transformers folder
    assert isinstance(result.infill, str) and result.expected_middle.strip()
    assert fresh_run_dir(tmp_path) == tmp_path / "quickstart-2"  # a second quickstart never overwrites
