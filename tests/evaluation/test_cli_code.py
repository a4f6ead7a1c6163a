"""`sc2tune eval code` end to end through the CLI (in-process): JSON last line, report files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.cli import main

PROBLEM = {"task_id": "t/0", "prompt": "def inc(x):\n", "entry_point": "inc",
           "test": "def check(f):\n    assert f(1) == 2\n", "canonical_solution": "    return x + 1\n"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_code_json_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problems = _write(tmp_path / "p.jsonl", [PROBLEM])
    samples = _write(tmp_path / "s.jsonl", [{"task_id": "t/0", "completion": "    return x + 1\n"},
                                             {"task_id": "t/0", "completion": "    return x\n"}])
    out = tmp_path / "report"
    code = main(["eval", "code", "--problems", str(problems), "--samples", str(samples), "--k", "1,2,5",
                 "--timeout", "5", "--json", "--out", str(out)])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # n=2, c=1: pass@1 = 1/2, pass@2 = 1 - C(1,2)/C(2,2) = 1; k=5 > n is left out
    assert last["pass@1"] == pytest.approx(0.5) and last["pass@2"] == pytest.approx(1.0)
    assert "pass@5" not in last
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "passk.png", "samples.jsonl"}
    results = json.loads((out / "results.json").read_text())
    assert results["per_task"] == {"t/0": {"n": 2, "c": 1}}
    assert "| pass@1 | 0.5000 |" in (out / "report.md").read_text()


def test_eval_code_fim_problems_written(tmp_path: Path) -> None:
    problems = _write(tmp_path / "p.jsonl", [PROBLEM])
    target = tmp_path / "fim.jsonl"
    assert main(["eval", "code", "--problems", str(problems), "--fim", "lines", "--write-problems",
                 str(target)]) == 0
    row = json.loads(target.read_text())
    assert row["canonical_middle"] == "    return x + 1\n" and row["prompt"] == PROBLEM["prompt"]


def test_eval_code_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problems = _write(tmp_path / "p.jsonl", [PROBLEM])
    assert main(["eval", "code", "--problems", str(problems)]) != 0
    assert "needs --samples" in capsys.readouterr().err
    assert main(["eval", "code", "--problems", str(tmp_path / "nope.jsonl"), "--samples", "x"]) != 0
    assert "file not found" in capsys.readouterr().err
    assert main(["eval", "code", "--problems", str(problems), "--samples", "x", "--k", "a"]) != 0
    assert "--k 'a'" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_code_generates_samples_with_a_model(tmp_path: Path, tiny_model_dir: str, capsys) -> None:
    problems = _write(tmp_path / "p.jsonl", [PROBLEM, {**PROBLEM, "task_id": "t/1"}])
    samples = tmp_path / "gen" / "samples.jsonl"
    code = main(["eval", "code", "--problems", str(problems), "--samples", str(samples), "--model", tiny_model_dir,
                 "--n-samples", "2", "--max-new-tokens", "4", "--k", "1,2", "--timeout", "5", "--json"])
    assert code == 0
    rows = [json.loads(line) for line in samples.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["t/0", "t/0", "t/1", "t/1"]
    assert all(isinstance(r["completion"], str) for r in rows)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["samples"] == 4 and set(last) >= {"pass@1", "pass@2"}


def test_eval_code_json_keeps_its_keys_and_adds_ci95(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    problems = _write(tmp_path / "p.jsonl", [PROBLEM, {**PROBLEM, "task_id": "t/1"}])
    samples = _write(tmp_path / "s.jsonl", [{"task_id": "t/0", "completion": "    return x + 1\n"},
                                             {"task_id": "t/1", "completion": "    return x\n"}])
    assert main(["eval", "code", "--problems", str(problems), "--samples", str(samples), "--k", "1",
                 "--timeout", "5", "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {"pass@1", "ci95", "tasks", "samples", "status_counts", "judged_again",
                         "tasks_without_samples"}
    assert last["pass@1"] == pytest.approx(0.5) and last["tasks"] == 2 and last["samples"] == 2
    # two tasks scoring 1 and 0: resampled means 0, 1/2, 1 (chances 1/4, 1/2, 1/4), so the 95% interval is [0, 1]
    assert last["ci95"] == {"pass@1": [0.0, 1.0]}
    assert main(["eval", "code", "--problems", str(problems), "--samples", str(samples), "--k", "1",
                 "--timeout", "5"]) == 0
    assert "pass@1: 0.5000  (95% interval 0.0000 to 1.0000" in capsys.readouterr().out
