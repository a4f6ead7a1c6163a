"""The memory cap holds for the whole sample, not per process: forking children that each allocate
just under the cap cannot add up to several times the cap (the sample is one process; its threads
share its address space). Bounded by construction: at worst (a broken cap) 4 x 300 MiB."""

from __future__ import annotations

import pytest

from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import SandboxLimits, isolation, run_program

LIMITS = SandboxLimits(timeout=8.0, memory_mb=384, max_processes=24)
CHUNK = 300 * 1024 * 1024  # under the cap for one process, 4 of them are > 3x the cap

GRAB = f"""
import os, threading
def hold(n):
    x = bytearray({CHUNK})  # calloc'd, then every page touched below
    for i in range(0, len(x), 4096):
        x[i] = 1
    return n
"""
FORKS = GRAB + """
held = 0
pids = []
for i in range(4):
    try:
        pid = os.fork()
    except OSError as err:
        print("fork refused:", err)
        break
    if pid == 0:
        try:
            hold(i)
            os._exit(0)
        except MemoryError:
            os._exit(1)
    pids.append(pid)
for pid in pids:
    held += os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
print("held", held, "x 300 MiB")
raise SystemExit(0 if held == 4 else 1)
"""


def test_forked_children_cannot_add_up_past_the_cap() -> None:
    if not isolation().seccomp:
        pytest.skip("without the seccomp filter the cap is per process (README)")
    result = run_program(FORKS, LIMITS)
    assert result.status == "failed", (result, "4 x 300 MiB held under a 384 MiB cap")
    assert "fork refused: [Errno 1] Operation not permitted" in result.stdout_tail, result.stdout_tail


def test_a_judged_sample_cannot_fork_but_threads_and_allocations_work() -> None:
    problem = Problem("mem/grab", "def grab(n):\n", "def check(candidate):\n    assert candidate(4) == 4\n", "grab")
    forks = ("    import os\n    pids = []\n    for _ in range(n):\n        pid = os.fork()\n"
             f"        if pid == 0:\n            x = bytearray({CHUNK})\n            os._exit(0)\n"
             "        pids.append(pid)\n"
             "    return sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in pids)\n")
    threads = ("    import threading\n    out = []\n"
               "    ts = [threading.Thread(target=lambda: out.append(sum(range(1000)))) for _ in range(n)]\n"
               "    [t.start() for t in ts]\n    [t.join() for t in ts]\n"
               f"    x = bytearray({CHUNK // 3})\n    return len(out)\n")
    result = evaluate_code({"mem/grab": problem}, [Sample("mem/grab", forks), Sample("mem/grab", threads)],
                           ks=[1], limits=LIMITS, workers=1, show_progress=False)
    statuses = [r.status for r in result.samples]
    assert statuses == ["failed" if isolation().seccomp else "passed", "passed"], result.samples
