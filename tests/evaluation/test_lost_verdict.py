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

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sc2tune.evaluation.sandbox as sandbox
from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import SandboxLimits

LIMITS = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)
SOURCES = ("_launcher.py", "_judge.py", "_candidate.py", "_wire.py")


_IN_COPY = """
import sys, threading, time
from pathlib import Path
import sc2tune.evaluation.sandbox as sandbox
from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import SandboxLimits
here = Path(sandbox.__file__).parent
assert str(here).startswith(sys.argv[1]), here  # the copy's code, whose files are rewritten below
emptied, samples, rewrite = sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4] == "rewrite"
texts = {name: (here / name).read_text() for name in emptied}
for name in emptied:  # the moment a checkout has recreated the file and not yet written it
    (here / name).write_text("")
stop = threading.Event()

def rewriter():
    while not stop.is_set():
        for name, text in texts.items():
            (here / name).write_text(text)
            time.sleep(0.002)
            (here / name).write_text("")
        time.sleep(0.05)

if rewrite:
    threading.Thread(target=rewriter, daemon=True).start()
problem = Problem("add", "def add(a, b):\\n", "def check(candidate):\\n    assert candidate(2, 3) == 5\\n", "add")
result = evaluate_code({"add": problem}, [Sample("add", "    return a + b\\n")] * samples, ks=[1],
                       limits=SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24), workers=4,
                       show_progress=False)
stop.set()
print(sum(s.status == "passed" and s.attempts == 1 for s in result.samples))
"""


def _judged_in_a_copy(tmp_path: Path, emptied: tuple[str, ...], samples: int, *, rewrite: bool) -> int:
    """Samples passed at the first attempt by a process that imported a COPY of the package (where the
    sandbox used to read its code at each run) and then emptied ``emptied`` in it, and, with ``rewrite``,
    kept rewriting them (whole, then empty) while judging, as a checkout of the tree would."""
    site = tmp_path / "site"
    shutil.copytree(Path(sandbox.__file__).parents[1], site / "sc2tune",
                    ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-c", _IN_COPY, str(site), ",".join(emptied), str(samples),
                           "rewrite" if rewrite else "once"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("emptied", [("_judge.py",), SOURCES], ids=["judge", "all"])
def test_a_tree_rewritten_during_the_run_does_not_lose_the_verdict(tmp_path: Path, emptied: tuple[str, ...]) -> None:
    assert _judged_in_a_copy(tmp_path, emptied, 2, rewrite=False) == 2


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
def test_no_verdict_is_lost_under_load_while_the_tree_is_rewritten(tmp_path: Path) -> None:
    """Stress: 400 trivial samples, 4 workers, a busy-loop process competing for the CPU, and a thread
    that keeps rewriting the package copy's sources (empty, then whole again) as a checkout would."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        passed = _judged_in_a_copy(tmp_path, SOURCES, 400, rewrite=True)
    finally:
        busy.kill()
        busy.wait()
    assert passed == 400, f"{400 - passed} of 400 not passed at the first attempt"
