"""The sandbox works wherever sc2tune is installed, also under /tmp, which its private file system hides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import sc2tune.evaluation.sandbox as sandbox
from sc2tune.evaluation.sandbox import JudgeJob, SandboxLimits, run_judged

LIMITS = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)
JOB = JudgeJob(context="def add(a, b):\n    return a + b\n", test="def check(candidate):\n    assert candidate(2, 3) == 5\n",
               entry_point="add")


def test_a_package_under_tmp_still_judges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert str(tmp_path).startswith("/tmp/")  # where CI may clone the project, and pytest puts tmp_path
    copy = tmp_path / "site" / "sc2tune" / "evaluation"
    shutil.copytree(Path(sandbox.__file__).parent, copy)
    monkeypatch.setattr(sandbox, "_LAUNCHER", copy / "_launcher.py")
    good = run_judged("def add(a, b):\n    return a + b\n", JOB, LIMITS)
    bad = run_judged("def add(a, b):\n    return a - b\n", JOB, LIMITS)
    assert (good.status, bad.status) == ("passed", "failed"), (good, bad)
