"""The sandbox's filesystem: no write of a sample reaches the host, files are bounded in number and size;
and with namespaces unavailable the sandbox says so and still judges right."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sc2tune.evaluation import confinement
from sc2tune.evaluation.codeeval import evaluate_code
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.evaluation.sandbox import SandboxLimits, isolation, run_program

NAME = f"sc2tune-fs-probe-{os.getpid()}"
# world-writable on a usual Debian host, plus places only root could write
TARGETS = ["/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/", "/root", "/etc", str(Path.cwd())]
PROBE = f"""
import errno, json, os
report = {{}}
for folder in {TARGETS!r}:
    try:
        with open(os.path.join(folder, {NAME!r}), "w") as f:
            f.write("x")
        os.mkdir(os.path.join(folder, {NAME!r} + "-dir"))
        report[folder] = "written"
    except OSError as err:
        report[folder] = errno.errorcode.get(err.errno, str(err.errno))
print(json.dumps(report))
"""
FAST = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)


def _left_on_host() -> list[str]:
    return [f"{folder}/{entry}" for folder in TARGETS if os.path.isdir(folder)
            for entry in os.listdir(folder) if entry.startswith(NAME)]


@pytest.fixture(autouse=True)
def _clean_host() -> Iterator[None]:
    """Whatever a failing sandbox let through is removed, so one failure cannot hide another."""
    yield
    for path in _left_on_host():
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _report(stdout: str) -> dict[str, str]:
    return json.loads(stdout.strip().splitlines()[-1])


def test_no_write_reaches_the_host_filesystem() -> None:
    if not isolation().namespaces:
        pytest.skip("no mount namespace on this machine (the plain mode is tested below)")
    result = run_program(PROBE, FAST)
    assert result.passed, result.stderr_tail
    report = _report(result.stdout_tail)
    assert _left_on_host() == []
    # the lock folders, /root and the checkout are not in the sample's root at all; the root is read-only;
    # the temporary folders are private
    assert report["/run/lock"] == "ENOENT" and report["/var/lock"] == "ENOENT"
    assert report["/root"] == "ENOENT" and report[str(Path.cwd())] == "ENOENT"
    assert report["/"] == "EROFS" and report["/etc"] in ("EROFS", "EACCES")
    assert all(report[folder] == "written" for folder in ("/tmp", "/var/tmp", "/dev/shm"))


def test_files_are_bounded_in_size_and_number() -> None:
    if not isolation().namespaces:
        pytest.skip("the file count is bounded by a private tmpfs, which needs a mount namespace")
    limits = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24, tmpfs_mb=8, max_files=200,
                           file_size_mb=3)
    program = """
import errno, json, os
def attempt(action):
    try:
        action()
        return "ok"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
def big():
    with open("big", "wb") as f:
        f.write(b"x" * (4 * 1024 * 1024))
report = {"big": attempt(big)}
os.remove("big")
sizes = 0
for i in range(8):  # 8 x 2 MiB > the 8 MiB tmpfs
    try:
        with open(f"part{i}", "wb") as f:
            f.write(b"x" * (2 * 1024 * 1024))
            f.flush()
        sizes += 2
    except OSError as err:
        report["parts"] = errno.errorcode.get(err.errno)
        break
for i in range(8):
    if os.path.exists(f"part{i}"):
        os.remove(f"part{i}")
made = 0
for i in range(5000):
    try:
        open(f"f{i}", "w").close()
        made += 1
    except OSError as err:
        report["files"] = errno.errorcode.get(err.errno)
        break
report.update(mib=sizes, made=made)
print(json.dumps(report))
"""
    result = run_program(program, limits)
    assert result.passed, result.stderr_tail
    report = _report(result.stdout_tail)
    assert report["big"] == "EFBIG"  # RLIMIT_FSIZE
    assert report["parts"] == "ENOSPC" and report["mib"] < 8  # tmpfs size
    assert report["files"] == "ENOSPC" and report["made"] < 200  # tmpfs inodes


def test_without_namespaces_the_sandbox_says_so_and_still_judges(caplog: pytest.LogCaptureFixture) -> None:
    limits = SandboxLimits(timeout=3.0, memory_mb=512, max_processes=24, namespaces=False)
    confinement._isolation.cache_clear()  # detect (and warn) again
    with caplog.at_level(logging.WARNING, logger="sc2tune.evaluation.confinement"):
        iso = isolation(limits.python, limits.namespaces)
    assert iso.mode == "plain" and not iso.namespaces
    assert "the sandbox runs degraded here" in caplog.text and "HOST FILESYSTEM WRITABLE" in caplog.text
    problem = Problem("add", "def add(a, b):\n", "def check(candidate):\n    assert candidate(2, 3) == 5\n", "add")
    forge = ("    class Anything:\n        def __eq__(self, other):\n            return True\n"
             "    return Anything()\n")
    kill = "    import os, signal\n    os.kill(os.getppid(), signal.SIGKILL)\n    return a + b\n"
    samples = [Sample("add", body) for body in ("    return a + b\n", "    return a - b\n", forge, kill)]
    result = evaluate_code({"add": problem}, samples, ks=[1], limits=limits, workers=2, show_progress=False)
    assert [r.status for r in result.samples] == ["passed", "failed", "failed", "failed"], result.samples
    run = run_program(PROBE, limits)
    assert run.passed, run.stderr_tail
    if iso.uid_drop:  # root: the sample's own files in the world-writable folders are removed after the run
        assert _left_on_host() == []
        assert _report(run.stdout_tail)["/etc"] == "EACCES"
