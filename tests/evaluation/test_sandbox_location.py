"""The sandbox works wherever sc2tune is installed, also under /tmp, which its private file system hides
(the launcher, judge and candidate code travel with each run; no file of the package is read inside)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import sc2tune

SCRIPT = """
import json
import sc2tune.evaluation.sandbox as sandbox
from sc2tune.evaluation.sandbox import JudgeJob, JudgePool, SandboxLimits
limits = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)
job = JudgeJob(context="def add(a, b):\\n    return a + b\\n",
               test="def check(candidate):\\n    assert candidate(2, 3) == 5\\n", entry_point="add")
with JudgePool(limits) as pool:
    good = pool.run_judged("def add(a, b):\\n    return a + b\\n", job)
    bad = pool.run_judged("def add(a, b):\\n    return a - b\\n", job)
print(json.dumps([sandbox.__file__, good.status, bad.status]))
"""


def test_a_package_under_tmp_still_judges(tmp_path: Path) -> None:
    assert str(tmp_path).startswith("/tmp/")  # where CI may clone the project, and pytest puts tmp_path
    site = tmp_path / "site"
    shutil.copytree(Path(sc2tune.__file__).parent, site / "sc2tune",
                    ignore=shutil.ignore_patterns("__pycache__", "assets"))
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    where, good, bad = json.loads(done.stdout.strip().splitlines()[-1])
    assert where.startswith(str(site))
    assert (good, bad) == ("passed", "failed")
