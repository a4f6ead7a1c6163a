"""Run one untrusted Python program per process, under limits, and say whether it succeeded.

Isolation of one run (what is enforced depends on what the OS allows; :func:`isolation` reports it):

* a fresh process tree started with ``python -I`` (isolated mode) in a new session, with a scrubbed
  environment (PATH, LANG, single-threaded BLAS/OpenMP, HOME = TMPDIR = the working folder);
* hard resource limits: address space (``RLIMIT_AS``), processes/threads (``RLIMIT_NPROC``), size of
  any written file (``RLIMIT_FSIZE``, also bounds the captured stdout/stderr), CPU seconds, open files,
  no core dumps; plus a wall-clock limit enforced from outside (the whole process group is killed);
* as root with ``unshare``: new network namespace (only a downed loopback: no network), new pid
  namespace (every process the sample forks dies with it, and it cannot see or signal host
  processes), new mount namespace with size-capped tmpfs on /tmp, /var/tmp and /dev/shm, and the sample
  runs as a dedicated unprivileged uid/gid (one per worker slot, not in /etc/passwd, no supplementary
  groups). ``RLIMIT_NPROC`` is ignored for uid 0, so dropping the uid is what makes the process cap
  real; the sample's interpreter must then be reachable by that uid (``sys.executable`` when it is,
  else the first world-readable ``python3`` on PATH);
* not root but unprivileged user namespaces allowed: the same namespaces under ``--map-root-user``
  (no uid drop; the process cap is the user's current task count plus ``max_processes``);
* neither: no namespaces; the network is blocked inside Python only (``socket`` replaced before the
  program runs; a best effort that C extensions can bypass), processes are bounded by ``RLIMIT_NPROC``
  as above, and stragglers are killed by process group after the run.

A sample that hangs, crashes, exhausts memory, fork-bombs or kills its parent only makes its own run
fail: the evaluator waits at most ``timeout`` (+ a small start-up grace) per run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_LAUNCHER = Path(__file__).with_name("_launcher.py")
_NS_FLAGS = ["--net", "--pid", "--mount", "--fork", "--kill-child", "--mount-proc"]
#: First uid tried for worker slots when running as root (slot i uses the i-th free uid from here).
SANDBOX_UID_BASE = 64000
_STARTUP_GRACE = 0.5
_MB = 1024 * 1024


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run. Sizes in MiB, times in seconds."""

    timeout: float = 10.0  #: wall-clock seconds before the process group is killed
    memory_mb: int = 1024  #: RLIMIT_AS: virtual address space of each process
    max_processes: int = 32  #: RLIMIT_NPROC: processes + threads of the sandbox uid
    file_size_mb: int = 16  #: RLIMIT_FSIZE: largest file (and captured output) a sample may write
    tmpfs_mb: int = 64  #: size of the private /tmp (root + mount namespace only)
    open_files: int = 256  #: RLIMIT_NOFILE
    python: str | None = None  #: interpreter for the samples (default: see module docstring)


@dataclass(frozen=True)
class RunResult:
    """Outcome of one program run."""

    status: str  #: passed | failed | timeout | error (the sandbox itself failed)
    returncode: int | None
    seconds: float
    stderr_tail: str
    stdout_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Isolation:
    """What the sandbox enforces on this machine (reported with every evaluation)."""

    mode: str  #: root-namespaces | user-namespaces | plain
    namespaces: bool
    uid_drop: bool
    network: str
    python: str

    def describe(self) -> str:
        return (f"mode {self.mode}: network {self.network}; "
                f"{'pid+mount namespaces, ' if self.namespaces else 'no namespaces, '}"
                f"{'dedicated unprivileged uid' if self.uid_drop else 'same uid as the evaluator'}; "
                f"interpreter {self.python}")


def _probe(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _world_usable(path: str) -> bool:
    """True when every folder above ``path`` is searchable and ``path`` readable+executable by others."""
    real = Path(os.path.realpath(path))
    for parent in real.parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
    mode = os.stat(real).st_mode
    return bool(mode & stat.S_IROTH and mode & stat.S_IXOTH)


def _python_for_uid_drop(requested: str | None) -> str | None:
    if requested:
        return requested if _world_usable(requested) else None
    candidates = [sys.executable, shutil.which("python3") or "", "/usr/bin/python3", "/usr/local/bin/python3"]
    for candidate in candidates:
        if not candidate or not os.path.exists(candidate) or not _world_usable(candidate):
            continue
        return candidate
    return None


@functools.lru_cache(maxsize=8)
def isolation(python: str | None = None) -> Isolation:
    """Detect once what the sandbox can enforce here (namespaces, uid drop, interpreter)."""
    unshare = shutil.which("unshare")
    if os.geteuid() == 0 and unshare and _probe([unshare, *_NS_FLAGS, "true"]):
        chosen = _python_for_uid_drop(python)
        if chosen is not None:
            return Isolation("root-namespaces", True, True, "none (empty network namespace)", chosen)
        log.warning("no Python interpreter is readable by an unprivileged uid; samples run as root in "
                    "namespaces, so the process limit is not enforced (pass --python)")
        return Isolation("root-namespaces", True, False, "none (empty network namespace)",
                         python or sys.executable)
    if unshare and _probe([unshare, "--user", "--map-root-user", *_NS_FLAGS, "true"]):
        return Isolation("user-namespaces", True, False, "none (empty network namespace)",
                         python or sys.executable)
    return Isolation("plain", False, False, "blocked in Python only (best effort)", python or sys.executable)


@functools.lru_cache(maxsize=64)
def _slot_uid(slot: int) -> int:
    """The ``slot``-th uid at or above :data:`SANDBOX_UID_BASE` that no account uses."""
    uid, found = SANDBOX_UID_BASE, -1
    while True:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            found += 1
            if found == slot:
                return uid
        uid += 1


def _user_task_count() -> int:
    """Tasks (processes + threads) owned by this real uid right now (the RLIMIT_NPROC count)."""
    uid, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"].strip())
        except (OSError, KeyError, ValueError):
            continue
    return count


def _environment() -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("sandbox process %d did not exit after SIGKILL", proc.pid)


def run_program(source: str, limits: SandboxLimits, *, slot: int = 0, success_marker: str | None = None
                ) -> RunResult:
    """Run ``source`` as ``program.py`` in a fresh sandboxed process; block until it ends or times out.

    The run passed when the process exited 0 and, if ``success_marker`` is given, the marker is in the
    last 4 KB of its stdout (so ``sys.exit(0)`` before the tests counts as a failure).
    """
    iso = isolation(limits.python)
    uid = _slot_uid(slot) if iso.uid_drop else None
    nproc = limits.max_processes if uid is not None else _user_task_count() + limits.max_processes
    host = Path(tempfile.mkdtemp(prefix="sc2tune-sample-"))
    try:
        (host / "program.py").write_text(source, encoding="utf-8")
        if uid is not None and not iso.namespaces:
            os.chown(host, uid, uid)
            os.chown(host / "program.py", uid, uid)
        config = {
            "program": str(host / "program.py"),
            "workdir": str(host),
            "tmpfs_mb": limits.tmpfs_mb if iso.mode == "root-namespaces" else 0,
            "python": iso.python,
            "uid": uid,
            "gid": uid,
            "env": _environment(),
            "network_guard": not iso.namespaces,
            "wall_seconds": int(limits.timeout) + 5,
            "limits": {
                "address_space": limits.memory_mb * _MB,
                "processes": nproc,
                "file_size": limits.file_size_mb * _MB,
                "cpu_seconds": int(limits.timeout) + 2,
                "open_files": limits.open_files,
            },
        }
        cmd = [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(config)]
        if iso.mode == "root-namespaces":
            cmd = [shutil.which("unshare") or "unshare", *_NS_FLAGS, *cmd]
        elif iso.mode == "user-namespaces":
            cmd = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *_NS_FLAGS, *cmd]
        start = time.monotonic()
        with open(host / "stdout", "wb") as out, open(host / "stderr", "wb") as err:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        start_new_session=True, close_fds=True, env=_environment(), cwd=host)
            except OSError as error:
                return RunResult("error", None, 0.0, f"cannot start the sandbox: {error}")
            try:
                returncode: int | None = proc.wait(timeout=limits.timeout + _STARTUP_GRACE)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            # stragglers of the session (no-namespace mode); a no-op when the pid namespace is gone
            _kill_group(proc)
        seconds = time.monotonic() - start
        stderr = _tail(host / "stderr")
        if timed_out:
            return RunResult("timeout", None, seconds, stderr, _tail(host / "stdout"))
        if returncode in (125, 126) and "sc2tune sandbox" in stderr:
            return RunResult("error", returncode, seconds, stderr)
        stdout = _tail(host / "stdout")
        ok = returncode == 0 and (success_marker is None or success_marker in stdout)
        return RunResult("passed" if ok else "failed", returncode, seconds, stderr, stdout)
    finally:
        shutil.rmtree(host, ignore_errors=True)
