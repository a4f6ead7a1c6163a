"""What this machine lets the sandbox enforce, detected once: namespaces, a uid drop, the interpreter.

:func:`isolation` probes ``unshare`` (as root, then with an unprivileged user namespace) and whether an
interpreter is usable by a dedicated uid, and logs a warning whenever the result is weaker than
``root-namespaces`` with a uid drop, naming what is missing (see :mod:`sc2tune.evaluation.sandbox` for
what each mode enforces). :func:`slot_uid` hands out the dedicated uids of the worker slots.
:func:`runtime_view` lists what the sample's private file system shows of the host (the runtime) and
which folders of it stay hidden (every ``site-packages`` / ``dist-packages``).

Memory: the sample's total is capped by its ``RLIMIT_AS`` because the seccomp filter (``_seccomp.py``)
keeps it to one process (threads allowed, no fork); cgroups are not used (this project's machines run
cgroup v1 hybrids whose v2 tree has no controllers, so a v2 child could not be tested). Where the filter
is unsupported (an ABI other than x86_64 / aarch64) the cap is per process only, and :meth:`Isolation.describe`
says so.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from sc2tune.evaluation import _seccomp

log = logging.getLogger(__name__)

#: unshare flags of a sandbox: no network, own pids (killed with the launcher), own mounts and IPC
NS_FLAGS = ["--net", "--pid", "--mount", "--ipc", "--fork", "--kill-child", "--mount-proc"]
#: First uid tried for worker slots when running as root (slot i uses the (2i)-th and (2i+1)-th free uids).
SANDBOX_UID_BASE = 64000


@dataclass(frozen=True)
class Isolation:
    """What the sandbox enforces on this machine (reported with every evaluation)."""

    mode: str  #: root-namespaces | user-namespaces | plain
    namespaces: bool
    uid_drop: bool
    network: str
    python: str
    seccomp: bool = True  #: the seccomp filter applies (keyrings denied, the sample is one process)

    @property
    def filesystem(self) -> str:
        if self.namespaces:
            return ("private root: only the runtime is visible, read-only (/usr, /bin, /lib*, the "
                    "interpreter's installation without site-packages, a few /etc files), private capped "
                    "tmpfs on /tmp, /var/tmp, /dev/shm")
        if self.uid_drop:
            return ("HOST FILESYSTEM WRITABLE in world-writable folders during the run (the sample's "
                    "top-level files in them are removed afterwards)")
        return "HOST FILESYSTEM WRITABLE wherever the evaluator's user can write"

    @property
    def judge(self) -> str:
        if self.uid_drop:
            return "judge and sample under separate unprivileged uids"
        if self.namespaces:
            return "judge and sample in separate nested user namespaces, judge not dumpable"
        return ("judge not dumpable but under the sample's uid: it relies on the kernel refusing "
                "ptrace between same-uid processes (kernel.yama.ptrace_scope >= 1)")

    @property
    def memory(self) -> str:
        if self.seccomp:
            return ("memory capped for the whole sample (one process: fork denied by seccomp, so its "
                    "RLIMIT_AS is its total); kernel keyrings denied, fresh session keyring")
        return ("MEMORY CAPPED PER PROCESS ONLY and kernel keyrings reachable (no seccomp filter for "
                f"{os.uname().machine})")

    def describe(self) -> str:
        return (f"mode {self.mode}: network {self.network}; "
                f"{'pid+mount+ipc namespaces, ' if self.namespaces else 'no namespaces, '}"
                f"{'dedicated unprivileged uids' if self.uid_drop else 'same uid as the evaluator'}; "
                f"{self.filesystem}; {self.memory}; {self.judge}; interpreter {self.python}")


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


#: Folders the sandbox's private file system replaces with empty tmpfs: an interpreter there is not found.
HIDDEN_IN_SANDBOX = ("/tmp/", "/var/tmp/", "/dev/shm/", "/run/")


def _visible(path: str) -> bool:
    return not path.startswith(HIDDEN_IN_SANDBOX)


def _default_pythons() -> list[str]:
    """Interpreters to try, each by its resolved path (a virtualenv under /tmp links to one elsewhere;
    samples run isolated with the standard library only, so the venv itself is not needed)."""
    found = [sys.executable, shutil.which("python3") or "", "/usr/bin/python3", "/usr/local/bin/python3"]
    return [os.path.realpath(p) for p in found if p and os.path.exists(p)]


def _python_for_uid_drop(requested: str | None) -> str | None:
    """The interpreter when samples run under dedicated uids: one they can read and run (None: none is)."""
    if requested:
        return requested if _world_usable(requested) else None
    return next((p for p in _default_pythons() if _visible(p) and _world_usable(p)), None)


def _python_for_namespaces(requested: str | None) -> str:
    """The interpreter when samples keep this uid: the requested one, else the first one the private file
    system leaves visible."""
    if requested:
        return requested
    return next((p for p in _default_pythons() if _visible(p)), sys.executable)


def isolation(python: str | None = None, namespaces: bool = True) -> Isolation:
    """Detect once what the sandbox can enforce here (namespaces, uid drop, interpreter, seccomp filter:
    whether the memory cap holds for the whole sample, see :attr:`Isolation.memory`).

    Anything short of ``root-namespaces`` with a uid drop and the filter is logged (once) as a warning
    that says what is missing."""
    return _isolation(python, namespaces)


@functools.lru_cache(maxsize=8)
def _isolation(python: str | None, namespaces: bool) -> Isolation:
    iso = _detect(python, namespaces)
    if not _seccomp.supported():
        iso = dataclasses.replace(iso, seccomp=False)
    if iso.mode != "root-namespaces" or not iso.uid_drop or not iso.seccomp:
        log.warning("the sandbox runs degraded here: %s", iso.describe())
    return iso


def _detect(python: str | None, namespaces: bool) -> Isolation:
    unshare = shutil.which("unshare") if namespaces else None
    if os.geteuid() == 0 and unshare and _probe([unshare, *NS_FLAGS, "true"]):
        chosen = _python_for_uid_drop(python)
        if chosen is not None:
            return Isolation("root-namespaces", True, True, "none (empty network namespace)", chosen)
        log.warning("no Python interpreter is readable by an unprivileged uid; samples run as root in "
                    "nested user namespaces and count against root's process limit (pass --python)")
        return Isolation("root-namespaces", True, False, "none (empty network namespace)",
                         _python_for_namespaces(python))
    if unshare and _probe([unshare, "--user", "--map-root-user", *NS_FLAGS, "true"]):
        return Isolation("user-namespaces", True, False, "none (empty network namespace)",
                         _python_for_namespaces(python))
    network = "blocked in Python only (best effort)"
    if os.geteuid() == 0:
        chosen = _python_for_uid_drop(python)
        if chosen is not None:
            return Isolation("plain", False, True, network, chosen)
    return Isolation("plain", False, False, network, python or sys.executable)


@functools.lru_cache(maxsize=128)
def slot_uid(slot: int) -> int:
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


def user_task_count() -> int:
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


#: Host paths the sample's root shows besides the interpreter's own installation (absent ones are skipped).
RUNTIME_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
                 "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                 "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/hosts")
_PREFIXES = ("import json, sys; print(json.dumps(sorted({sys.prefix, sys.base_prefix, sys.exec_prefix, "
             "sys.base_exec_prefix})))")


@functools.lru_cache(maxsize=8)
def runtime_view(python: str) -> dict[str, list[str]]:
    """What the sample's private root holds: ``expose`` (host paths bound read-only at the same place:
    :data:`RUNTIME_PATHS` and the installation prefixes of ``python``) and ``hide`` (every
    ``site-packages`` / ``dist-packages`` folder under them, covered by an empty tmpfs: third-party
    packages, and the benchmark data some of them ship, are not visible; samples run on the standard
    library)."""
    try:
        found = subprocess.run([python, "-I", "-S", "-c", _PREFIXES], capture_output=True, text=True,
                               timeout=30, check=True).stdout
        prefixes = [p for p in json.loads(found) if isinstance(p, str) and p.startswith("/")]
    except (OSError, subprocess.SubprocessError, ValueError):
        prefixes = [str(Path(python).resolve().parent.parent)]
    expose = [p for p in RUNTIME_PATHS if os.path.lexists(p)]
    for prefix in prefixes:
        if prefix != "/" and not any(prefix == e or prefix.startswith(e.rstrip("/") + "/") for e in expose):
            expose.append(prefix)
    hide: set[str] = set()
    for root in {"/usr", "/usr/local", *prefixes}:
        for pattern in ("lib*/python*/*-packages", "local/lib*/python*/*-packages"):
            hide.update(glob.glob(os.path.join(root, pattern)))
    return {"expose": expose, "hide": sorted(hide)}
