"""Lost verdicts (issue #23 item 8b): a correct sample "failed" with exit status 0 and no verdict.

The race: every run used to read the launcher, the judge and the wire code from the package folder, so
a run that started while those files were being rewritten (a ``git checkout`` or merge of the tree the
evaluation runs from: files are recreated empty, then written) ran an empty or cut launcher or judge,
which exits 0 without a verdict. The sources are now read once, when the sandbox module is imported,
and sent to the launcher with the job; a verdict that still goes missing (judge exit 0, no record) is
judged again and, failing that, reported as "error", never "failed".

The reference for "correct" is the test's own arithmetic (``add(2, 3) == 5``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import sc2tune.evaluation.sandbox as sandbox
from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import JudgeJob, JudgePool, SandboxLimits

LIMITS = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)
JOB = JudgeJob(context="def add(a, b):\n    return a + b\n", test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
               entry_point="add")
CORRECT = "def add(a, b):\n    return a + b\n"
SOURCES = ("_launcher.py", "_judge.py", "_candidate.py", "_wire.py")


def _package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the evaluation package that the sandbox is pointed at (where it used to read its code)."""
    copy = tmp_path / "site" / "sc2tune" / "evaluation"
    shutil.copytree(Path(sandbox.__file__).parent, copy)
    monkeypatch.setattr(sandbox, "_LAUNCHER", copy / "_launcher.py", raising=False)
    return copy


@pytest.mark.parametrize("emptied", [("_judge.py",), SOURCES], ids=["judge", "all"])
def test_a_tree_rewritten_during_the_run_does_not_lose_the_verdict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, emptied: tuple[str, ...]) -> None:
    copy = _package_copy(tmp_path, monkeypatch)
    for name in emptied:  # the moment a checkout has recreated the file and not yet written it
        (copy / name).write_text("")
    with JudgePool(LIMITS) as pool:
        result = pool.run_judged(CORRECT, JOB)
    assert (result.status, result.reason) == ("passed", ""), result


def test_a_lost_verdict_is_judged_again_and_never_scored_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: the verdict pipe comes back empty on the first run (then on every run)."""
    real, calls = sandbox._read_verdict, []

    def lose_first(fd: int, deadline: float, limit: int = 65536) -> bytes:
        calls.append(fd)
        return b"" if len(calls) == 1 else real(fd, deadline, limit)

    problem = Problem("add", "def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
    monkeypatch.setattr(sandbox, "_read_verdict", lose_first)
    result = evaluate_code({"add": problem}, [Sample("add", "    return a + b\n")], ks=[1], limits=LIMITS,
                           show_progress=False)
    assert [(s.status, s.attempts) for s in result.samples] == [("passed", 2)]
    assert result.summary()["judged_again"] == 1
    monkeypatch.setattr(sandbox, "_read_verdict", lambda fd, deadline, limit=65536: b"")
    result = evaluate_code({"add": problem}, [Sample("add", "    return a + b\n")], ks=[1], limits=LIMITS,
                           show_progress=False)
    lost = result.samples[0]
    assert (lost.status, lost.attempts) == ("error", 3) and "verdict was lost" in lost.error, lost


@pytest.mark.slow
def test_no_verdict_is_lost_under_load_while_the_tree_is_rewritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stress: 400 trivial samples, 4 workers, a busy-loop process competing for the CPU, and a thread
    that keeps rewriting the package copy's sources (empty, then whole again) as a checkout would."""
    copy = _package_copy(tmp_path, monkeypatch)
    texts = {name: (copy / name).read_text() for name in SOURCES}
    stop = threading.Event()

    def rewrite() -> None:
        while not stop.is_set():
            for name, text in texts.items():
                (copy / name).write_text("")
                time.sleep(0.002)
                (copy / name).write_text(text)
            time.sleep(0.05)

    problem = Problem("add", "def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    writer = threading.Thread(target=rewrite, daemon=True)
    writer.start()
    try:
        result = evaluate_code({"add": problem}, [Sample("add", "    return a + b\n")] * 400, ks=[1],
                               limits=LIMITS, workers=4, show_progress=False)
    finally:
        stop.set()
        writer.join()
        busy.kill()
        busy.wait()
    bad = [s for s in result.samples if s.status != "passed"]
    assert not bad, f"{len(bad)} of 400 not passed, e.g. {bad[:3]}"
    assert all(s.attempts == 1 for s in result.samples)
