"""Output and int-digit limits of a judged sample: unlimited by default, lower when the caller says so,
and a limit hit named as such in the result, not reported as a wrong answer (issue #23 item 8).

Expected values are worked by hand: ``len(str(10 ** 10000)) == 10001`` (a 1 and 10,000 zeros), and
``int(str(3 * 10 ** 9999)[::-1]) == 3`` (the digits "3" + 9,999 zeros, reversed: leading zeros then 3).
Both convert a 10,000-digit int to and from ``str``, past Python's default limit of 4,300 digits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.evaluation.codeeval import SampleResult, evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import SandboxLimits


def _problem(name: str, signature: str, test: str) -> Problem:
    return Problem(name, f"def {name}{signature}:\n", "def check(candidate):\n" + test, name)


PROBLEMS = {p.task_id: p for p in (
    _problem("loud", "(a, b)", "    assert candidate(2, 3) == 5\n"),
    _problem("width", "(n)", "    assert candidate(10 ** 10000) == 10001\n"),
    _problem("mirror", "(n)", "    assert candidate(3 * 10 ** 9999) == 3\n"),
)}
PRINTS_20_MIB = Sample("loud", "    print('x' * (20 * 1024 * 1024))\n    return a + b\n")
PRINTS_HALF_MIB = Sample("loud", "    print('x' * (512 * 1024))\n    return a + b\n")
STR_OF_BIG_INT = Sample("width", "    return len(str(n))\n")
ROUND_TRIP = Sample("mirror", "    return int(str(n)[::-1])\n")
SAMPLES = [PRINTS_20_MIB, PRINTS_HALF_MIB, STR_OF_BIG_INT, ROUND_TRIP]
BASE = {"timeout": 10.0, "memory_mb": 1024, "max_processes": 24}


def _judge(limits: SandboxLimits) -> list[SampleResult]:
    result = evaluate_code(PROBLEMS, SAMPLES, ks=[1], limits=limits, workers=2, show_progress=False)
    by_task: dict[str, list[SampleResult]] = {}
    for r in result.samples:
        by_task.setdefault(r.task_id, []).append(r)
    return [by_task[s.task_id][[t for t in SAMPLES if t.task_id == s.task_id].index(s)] for s in SAMPLES]


@pytest.mark.slow
def test_by_default_no_output_or_digit_limit() -> None:
    results = _judge(SandboxLimits(**BASE))
    assert [(r.status, r.error) for r in results] == [("passed", "")] * 4, results


@pytest.mark.slow
def test_lower_limits_are_hit_and_named() -> None:
    loud, quiet, width, mirror = _judge(SandboxLimits(**BASE, max_output_mb=1, max_int_digits=4300))
    assert loud.status == "failed" and loud.error.startswith("output limit hit: more than 1 MiB printed"), loud
    assert (quiet.status, quiet.error) == ("passed", "")  # 0.5 MiB is under the 1 MiB limit
    for r in (width, mirror):
        assert r.status == "failed" and r.error.startswith("int digit limit hit: "), r
        assert "4300 digits" in r.error, r  # Python's own words quote the limit that was set


@pytest.mark.parametrize(("field", "value"), [("max_output_mb", 0), ("max_output_mb", -1.0),
                                               ("max_int_digits", 639), ("max_int_digits", 0)])
def test_limits_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        SandboxLimits(**{field: value})


@pytest.mark.parametrize(("option", "value"), [("--max-output-mb", "0"), ("--max-int-digits", "100")])
def test_cli_refuses_a_bad_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    pass\n"}) + "\n")
    out = tmp_path / "report"
    assert main(["eval", "code", "--samples", str(samples), option, value, "--out", str(out)]) != 0
    err = capsys.readouterr().err
    assert f"{option} must be" in err and "leave it out for no limit" in err and "Traceback" not in err
    assert not out.exists()
