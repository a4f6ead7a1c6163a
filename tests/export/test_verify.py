"""``--verify``: the figures on the tiny model, against an independent count.

The report's definitions are checked on a hand-made case (two logit rows whose top-2 gap is known) and end to
end: the tiny model's F32 export agrees with transformers on every greedy sequence and next token, and the JSON
of ``sc2tune export --verify --json`` is one object with the issue's keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sc2tune.export.api import export_gguf
from sc2tune.export.verify import NEAR_TIE, _gap, verify_gguf

from .conftest import require_llama_cpp


def test_gap_is_the_top_two_logit_difference() -> None:
    row = np.array([0.5, 3.0, -1.0, 2.999], dtype=np.float32)
    assert _gap(row) == pytest.approx(0.001, abs=1e-6) and _gap(row) < NEAR_TIE
    assert _gap(np.array([1.0, 0.0, 0.5])) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny_gguf(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_gguf(tiny_dir, tmp_path_factory.mktemp("verify") / "tiny.gguf", dtype="f32")


def test_f32_export_agrees_with_transformers(tiny_dir: Path, tiny_gguf: Path) -> None:
    require_llama_cpp()
    report = verify_gguf(tiny_dir, tiny_gguf, prompts=2, new_tokens=16)
    assert report.prompts == 2 and report.kinds == {"fim": 1, "l2r": 1}
    assert report.tokenizer_agreement == 1.0
    assert report.greedy_exact_match == 1.0 and report.other_divergences == 0
    assert report.top1_agreement_excluding_near_ties == 1.0
    assert report.top1_positions > 2 * 16 and 0 < report.max_logit_diff < 0.05


def test_cli_json_is_one_object_with_the_figures(tiny_dir: Path, tiny_gguf: Path, tmp_path: Path, run_cli) -> None:
    require_llama_cpp()
    out = tmp_path / "again.gguf"
    result = run_cli("export", str(tiny_dir), "--out", str(out), "--dtype", "f32", "--verify", "--prompts", "1",
                     "--new-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"prompts", "greedy_exact_match", "top1_agreement", "near_tie_divergences", "max_logit_diff"} <= set(payload)
    assert payload["prompts"] == 1 and payload["export"]["out"] == str(out)
    assert out.read_bytes() == tiny_gguf.read_bytes()  # the same model gives the same file
