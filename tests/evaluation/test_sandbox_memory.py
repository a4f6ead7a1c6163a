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


# Memory a process holds outside its address space: SysV shared memory (a segment keeps its pages after
# shmdt, until the IPC namespace ends) and memfd files (not in the capped tmpfs; each up to file_size_mb).
# Bounded by construction: at worst 4 x 64 MiB + 8 x 15 MiB = 376 MiB.
OUTSIDE = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.shmdt.argtypes = [ctypes.c_void_p]
SEG = 64 << 20
held = 0
for _ in range(4):
    sid = libc.shmget(0, ctypes.c_size_t(SEG), 0o1600)
    if sid < 0:
        print("shmget refused:", os.strerror(ctypes.get_errno()))
        break
    addr = libc.shmat(sid, None, 0)
    ctypes.memset(addr, 7, SEG)  # touch every page, then let go of the mapping: the segment keeps them
    libc.shmdt(ctypes.c_void_p(addr))
    held += SEG >> 20
fds = []
try:
    for i in range(8):
        fd = os.memfd_create(f"m{i}")
        for _ in range(15):
            os.write(fd, bytes(1 << 20))
        fds.append(fd)
        held += 15
except OSError as err:
    print("memfd refused:", err.strerror)
print("held", held, "MiB outside the address space")
raise SystemExit(0 if held > 128 else 1)
"""


def test_shared_memory_and_memfd_cannot_hold_memory_past_the_cap() -> None:
    if not isolation().seccomp:
        pytest.skip("without the seccomp filter the cap is per process (README)")
    result = run_program(OUTSIDE, SandboxLimits(timeout=20.0, memory_mb=128))
    assert result.status == "failed", (result, "more than the 128 MiB cap held in SysV shm / memfds")
    assert "shmget refused: Operation not permitted" in result.stdout_tail, result.stdout_tail
    assert "memfd refused: Operation not permitted" in result.stdout_tail, result.stdout_tail
    assert "held 0 MiB" in result.stdout_tail, result.stdout_tail


def test_a_sample_still_runs_ctypes_callbacks_and_threads() -> None:
    """What the memory denials must not break: libffi closures (ctypes callbacks), threads, mmap."""
    program = ("import ctypes, mmap, threading\n"
               "libc = ctypes.CDLL(None)\n"
               "CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int))\n"
               "arr = (ctypes.c_int * 5)(5, 1, 4, 2, 3)\n"
               "libc.qsort(arr, 5, ctypes.sizeof(ctypes.c_int), CMP(lambda a, b: a[0] - b[0]))\n"
               "m = mmap.mmap(-1, 1 << 20)\nm[:3] = b'abc'\n"
               "t = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()\n"
               "print(list(arr), m[:3])\n")
    result = run_program(program, SandboxLimits(timeout=20.0))
    assert result.status == "passed", result
    assert "[1, 2, 3, 4, 5] b'abc'" in result.stdout_tail, result.stdout_tail
