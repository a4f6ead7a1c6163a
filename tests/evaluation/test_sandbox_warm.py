"""Warm sandboxes (``JudgePool``): many samples judged in one slot's sandbox, each in a fresh run.

A sample writes through every channel it has (files in each writable folder and its working folder,
a global, a patched builtin and module, the environment, a POSIX message queue, an abstract unix
socket; the kernel keyring is refused outright); the next sample judged in the same warm sandbox
looks for all of it and must find nothing.
That both ran in the same warm sandbox is checked on the side (the device of the sandbox's root, a
tmpfs made once per warm sandbox, is the same in both runs), so the test cannot pass by accident of a
restarted sandbox. The expected values are the writer's own: what it reads back in its own run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from sc2tune.evaluation.sandbox import JudgeJob, JudgePool, SandboxLimits, isolation

LIMITS = SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24)
CHECK = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
JOB = JudgeJob(context="def add(a, b):\n    return a + b\n", test=CHECK, entry_point="add")
CORRECT = "def add(a, b):\n    return a + b\n"
NAME = "sc2tune-warm-probe"

# module-level code of both probes: what each channel holds now
_LOOK = textwrap.dedent(f"""
    import builtins, ctypes, json, math, os, socket, sys
    NAME = {NAME!r}
    FOLDERS = ["/tmp", "/var/tmp", "/dev/shm", os.getcwd(), os.environ.get("HOME", ".")]
    libc = ctypes.CDLL(None, use_errno=True)
    def look():
        seen = []
        for folder in FOLDERS:
            for top, dirs, files in os.walk(folder):
                seen += [os.path.join(top, f) for f in files if f.startswith(NAME)]
        if hasattr(builtins, "sc2tune_leak"):
            seen.append("builtins.sc2tune_leak")
        if abs(-1) != 1:
            seen.append("builtins.abs")
        if math.pi != 3.141592653589793:
            seen.append("math.pi")
        if NAME in os.environ:
            seen.append("environ")
        if "sc2tune_leak_module" in sys.modules:
            seen.append("sys.modules")
        mq_open = getattr(libc, "mq_open", None)
        if mq_open is not None and mq_open(("/" + NAME).encode(), os.O_RDONLY) >= 0:
            seen.append("mqueue")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("\\0" + NAME)
            seen.append("abstract socket")
        except OSError:
            pass
        return seen
    root = os.stat("/").st_dev
""")

WRITER = CORRECT + _LOOK + textwrap.dedent("""
    import threading, types
    for folder in FOLDERS:
        with open(os.path.join(folder, NAME), "w") as f:
            f.write("left behind")
    builtins.sc2tune_leak = True
    builtins.abs = lambda x: 0
    math.pi = 3.0
    os.environ[NAME] = "1"
    sys.modules["sc2tune_leak_module"] = types.ModuleType("sc2tune_leak_module")
    mq_open = getattr(libc, "mq_open", None)
    if mq_open is not None:
        mq_open(("/" + NAME).encode(), os.O_CREAT | os.O_RDWR, 0o666, None)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("\\0" + NAME)
    server.listen(1)
    ADD_KEY = {"x86_64": 248, "aarch64": 217}.get(os.uname().machine)  # the kernel's syscall tables
    key = None
    if ADD_KEY is not None:  # a uid's user keyring outlives its processes: refused (seccomp)
        serial = libc.syscall(ADD_KEY, b"user", NAME.encode(), b"x", 1, ctypes.c_long(-4))
        key = "added" if serial > 0 else os.strerror(ctypes.get_errno())
    print(json.dumps({"root": root, "seen": look(), "add_key": key}), flush=True)
""")

READER = CORRECT + _LOOK + "print(json.dumps({'root': root, 'seen': look()}), flush=True)\n"


def _report(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def pool():
    if not isolation(LIMITS.python, LIMITS.namespaces).namespaces:
        pytest.skip("warm sandboxes need namespaces; without them every run is a cold one")
    with JudgePool(LIMITS) as judges:
        yield judges


def test_the_next_sample_in_a_warm_sandbox_finds_nothing_the_last_one_left(pool: JudgePool) -> None:
    writer = pool.run_judged(WRITER, JOB, slot=0)
    reader = pool.run_judged(READER, JOB, slot=0)
    assert (writer.status, reader.status) == ("passed", "passed"), (writer, reader)
    wrote, found = _report(writer.stdout_tail), _report(reader.stdout_tail)
    assert wrote["root"] == found["root"], "the two samples did not run in the same warm sandbox"
    # the writer's probes work: in its own run it sees everything it left (the mqueue where libc has it)
    expected = {f"/tmp/{NAME}", f"/var/tmp/{NAME}", f"/dev/shm/{NAME}", f"/tmp/sample/{NAME}",
                "builtins.sc2tune_leak", "builtins.abs", "math.pi", "environ", "sys.modules", "abstract socket"}
    assert expected <= set(wrote["seen"]), wrote
    assert wrote["add_key"] in (None, "Operation not permitted"), wrote
    assert found["seen"] == [], found


def test_a_sample_past_its_time_does_not_hold_up_the_next(pool: JudgePool) -> None:
    hang = "def add(a, b):\n    import time\n    time.sleep(60)\n"
    limits = SandboxLimits(timeout=1.0, memory_mb=512, max_processes=24)
    with JudgePool(limits) as judges:
        start = time.monotonic()
        stuck = judges.run_judged(hang, JOB, slot=0)
        assert stuck.status == "timeout" and time.monotonic() - start < limits.timeout + 5, stuck
        after = judges.run_judged(CORRECT, JOB, slot=0)
    assert after.status == "passed", after


def test_the_judge_converts_ints_of_any_size() -> None:
    """Python's default limit is 4,300 digits; the tests' own conversions (trusted code) have none, also
    when the sample's are limited. By hand: ``10 ** 5000`` is a 1 and 5,000 zeros, 5,001 digits."""
    job = JudgeJob(context="def big():\n    pass\n",
                   test="def check(candidate):\n    assert len(str(candidate())) == 5001\n", entry_point="big")
    sample = "def big():\n    return 10 ** 5000\n"
    for limits in (LIMITS, SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24, max_int_digits=4300)):
        with JudgePool(limits) as judges:
            result = judges.run_judged(sample, job)
        assert (result.status, result.reason) == ("passed", ""), (limits, result)


_ABANDON = """
import json, os, sys
from sc2tune.evaluation.sandbox import JudgeJob, JudgePool, SandboxLimits
pool = JudgePool(SandboxLimits(timeout=5.0, memory_mb=512, max_processes=24))
result = pool.run_judged({program!r}, JudgeJob({context!r}, {test!r}, "add"))
print(json.dumps([result.status, os.getpgid(0), [s._proc.pid for s in pool._sandboxes.values()]]), flush=True)
os._exit(0)  # no close: as an evaluator that is killed
"""


def _sessions(sids: list[int]) -> list[int]:
    """Pids of processes in any of the sessions ``sids``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) in sids:
                    found.append(int(entry))
            except OSError:
                continue
    return found


def test_an_evaluator_that_dies_leaves_no_sandbox_behind(pool: JudgePool) -> None:
    script = _ABANDON.format(program=CORRECT, context=JOB.context, test=JOB.test)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    status, _, sessions = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == "passed" and len(sessions) == 1, done
    deadline = time.monotonic() + 15
    while _sessions(sessions) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sessions(sessions) == []
