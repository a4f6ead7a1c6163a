"""Run untrusted Python under limits: a sample judged by its problem's tests, or a bare program.

Who decides a pass (:meth:`JudgePool.run_judged`): three processes, started by ``_launcher.py``
(cold) or forked by ``_zygote.py`` (warm: see "Warm and cold runs" below).

* the **candidate** process runs ``prompt + completion + suffix`` (never the tests) and answers calls
  to the entry point (``_candidate.py``);
* the **judge** process, started first and under its own uid when the sandbox can drop privileges,
  runs the problem's tests with its own pristine interpreter; each call of ``candidate`` goes to the
  candidate process as plain data and comes back decoded into exact builtin or standard-library value
  types built by the judge (``_wire.py``), so
  an object with a rigged ``__eq__``, patched builtins or a redefined ``check`` cannot exist on the
  judge's side (``_judge.py``);
* the **evaluator** (this module) reads the verdict only from a pipe whose write end it hands to the
  launcher, which gives it to the judge alone (the candidate never holds it; its stdout, stderr and
  exit status are diagnostics, never the verdict). A record counts only with this run's nonce, and a
  pass needs the judge to have seen ``check`` return. Exiting early, crashing, hanging or killing
  anything ends in "failed" or "timeout", never "passed".

:func:`run_program` runs a bare program and reports its exit status: it is *not* a judge (the
program decides its own exit status).

Isolation of one run (what is enforced depends on what the OS allows; :func:`isolation`, from
:mod:`sc2tune.evaluation.confinement`, detects and reports it):

* a fresh process tree started with ``python -I`` (isolated mode) in a new session, with a scrubbed
  environment (PATH, LANG, single-threaded BLAS/OpenMP, HOME = TMPDIR = the working folder);
* hard resource limits: address space (``RLIMIT_AS``), processes/threads (``RLIMIT_NPROC``), size of
  any written file (``RLIMIT_FSIZE``, also bounds the captured stdout/stderr), CPU seconds, open files,
  no core dumps; plus a wall-clock limit enforced from outside (the whole process group is killed);
* a seccomp filter on the judge and the sample (``_seccomp.py``; x86_64 and aarch64): the kernel
  keyring calls are refused (a uid's keyring outlives its processes, so one sample could leave data for
  a later one) and each starts in a fresh session keyring; the sample may start threads but no process,
  so its ``RLIMIT_AS`` caps its total memory (N forked children would each get their own), nor hold
  memory outside its address space (System V IPC, memfd);
* as root with ``unshare``: new network namespace (only a downed loopback: no network, abstract unix
  sockets private), new pid namespace (the sample cannot see or signal host processes), new IPC
  namespace, new mount namespace whose root is a fresh read-only tmpfs holding only the runtime
  (:func:`~sc2tune.evaluation.confinement.runtime_view`: /usr, /bin, /lib*, the interpreter's
  installation with its site-packages emptied, a few /etc files, five /dev nodes, the run's /proc;
  never the problems, the tests, sc2tune or the checkout), where only size- and inode-capped tmpfs on
  /tmp, /var/tmp and /dev/shm are writable (no write reaches the host filesystem), and the sample and
  the judge run as two dedicated unprivileged uids (per worker slot, not in /etc/passwd, no
  supplementary groups). ``RLIMIT_NPROC`` is ignored for uid 0, so dropping the uid is what makes the
  thread cap real; the interpreter must then be reachable by those uids (``sys.executable`` when it
  is, else the first world-readable ``python3`` on PATH);
* not root but unprivileged user namespaces allowed: the same namespaces under ``--map-root-user``;
  no uid drop, so the sample and the judge each enter a nested user namespace (no capability over
  the mounts nor over each other) and the judge is not dumpable; the process cap is the user's
  current task count plus ``max_processes``;
* neither (or ``SandboxLimits(namespaces=False)``): no namespaces; the network is blocked inside
  Python only (``socket`` replaced before the program runs; C code can bypass it), processes are
  bounded by ``RLIMIT_NPROC`` as above, stragglers are killed by process group after the run. As root
  the uids are still dropped, and files the sample's uid left in the world-writable temporary folders
  are removed after the run; otherwise the sample can write wherever the evaluator's user can. The
  evaluator logs a warning naming what is missing.

A sample that hangs, crashes, exhausts memory, fork-bombs or kills its parent only makes its own run
fail: the evaluator waits at most ``timeout`` (+ a small start-up grace) per run.

Warm and cold runs (:class:`JudgePool`): with namespaces, the set-up above that does not depend on the
sample (the launcher's namespaces, the private root, the interpreter's start and the imports of the
judge's, candidate's and wire code) is done once per worker slot, in a warm sandbox (``warm.py``,
``_zygote.py``). Each sample is then a run forked from that pristine zygote into fresh mount, pid, IPC and
network namespaces of its own (new ``/proc``, new capped tmpfs on ``/tmp``, ``/var/tmp``, ``/dev/shm``),
whose judge and candidate are confined exactly as a cold run's (limits, uids or nested user namespaces,
session keyring, seccomp filter, the verdict pipe held by the judge alone) but run the judge's and
candidate's code in the forked interpreter instead of starting a new one; the run's pid namespace ends
with it, so nothing of a sample survives into the next. That is about 5x less work per sample (about
20 ms of CPU instead of 100 ms on HumanEval-infilling; ``bench/judge_speed.py`` times it). Without
namespaces, and in :func:`run_program`, every run is cold: a launcher started for it alone, as above.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sc2tune.evaluation.confinement import (
    NS_FLAGS,
    Isolation,
    isolation,
    runtime_view,
    slot_uid,
    user_task_count,
)
from sc2tune.evaluation.warm import Outcome, WarmSandbox, WarmSandboxError, tail

log = logging.getLogger(__name__)


def _read_sources() -> dict[str, str]:
    """The code of the sandbox's own processes, read once when this module is imported.

    Every run gets it from here (the launcher as ``python -c``, the judge and candidate sources in its
    job), never from the package folder: a run that started while that folder was being rewritten (a
    checkout or merge of the tree the evaluation runs from) used to run an empty or cut launcher or
    judge, which exits 0 without a verdict (issue #23 item 8b), and an evaluation now judges every
    sample with the same code however long it runs."""
    here = Path(__file__).parent

    def read(*names: str) -> str:
        return "\n".join((here / name).read_text(encoding="utf-8") for name in names)

    return {"launcher": read("_launcher.py"), "judge": read("_wire.py", "_judge.py"),
            "candidate": read("_wire.py", "_candidate.py"), "zygote": read("_zygote.py"),
            "seccomp": read("_seccomp.py")}


_SOURCES = _read_sources()
_STARTUP_GRACE = 0.5
#: reason of a run whose judge exited 0 (it does so only after writing a pass) but left no record
LOST_VERDICT = "the judge's verdict was lost (an infrastructure fault, not the sample's)"
_VERDICT_GRACE = 5.0  #: seconds to wait for the verdict pipe's end once the launcher has exited
_MB = 1024 * 1024
_MIN_INT_DIGITS = 640  #: smallest limit ``sys.set_int_max_str_digits`` accepts (besides 0 = none)
#: what the candidate writes to fd 2 when its printed output passes its limit (``_candidate.py``)
_OUTPUT_LIMIT_MARK = "sc2tune: output limit hit: more than {limit} characters printed"
_DIGIT_LIMIT_TEXT = "for integer string conversion"  #: in Python's ValueError past the digit limit
_FILE_SIZE_TEXT = "[Errno 27] File too large"  #: EFBIG: a write past RLIMIT_FSIZE


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run. Sizes in MiB, times in seconds."""

    timeout: float = 10.0  #: wall-clock seconds before the process group is killed
    memory_mb: int = 1024  #: RLIMIT_AS: address space of the sample (one process, see above) and of the judge
    max_processes: int = 32  #: RLIMIT_NPROC: tasks of the sandbox uid (threads: the sample cannot fork)
    file_size_mb: int = 16  #: RLIMIT_FSIZE: largest file (and captured output) a sample may write
    tmpfs_mb: int = 64  #: size of the private /tmp (mount namespace only)
    max_files: int = 1024  #: files + folders the private /tmp can hold (tmpfs nr_inodes)
    open_files: int = 256  #: RLIMIT_NOFILE
    python: str | None = None  #: interpreter for the samples (default: see module docstring)
    namespaces: bool = True  #: use namespaces when the machine allows them (False: the plain mode)
    #: None (default): printed output is unlimited, as in the reference harness (swallowed past a 64 KiB
    #: head). N: a judged sample whose output through ``sys.stdout`` + ``sys.stderr`` passes N MiB
    #: (N * 2**20 characters) is stopped and fails with reason "output limit hit: more than N MiB printed"
    max_output_mb: float | None = None
    #: None (default): int <-> decimal str conversions of any size (``sys.set_int_max_str_digits(0)``;
    #: Python's own default is 4,300 digits). N (>= 640, Python's floor): that limit in a judged sample;
    #: a conversion past it fails with reason "int digit limit hit: ..."
    max_int_digits: int | None = None

    def __post_init__(self) -> None:
        if self.max_output_mb is not None and not self.max_output_mb > 0:
            raise ValueError(f"max_output_mb must be positive (None = no limit), got {self.max_output_mb}")
        if self.max_int_digits is not None and self.max_int_digits < _MIN_INT_DIGITS:
            raise ValueError(f"max_int_digits must be at least {_MIN_INT_DIGITS} (Python's floor; None = no limit), "
                             f"got {self.max_int_digits}")


@dataclass(frozen=True)
class RunResult:
    """Outcome of one program run."""

    status: str  #: passed | failed | timeout | error (the sandbox or the problem itself failed)
    returncode: int | None  #: exit status of the deciding process (program, or judge), 128+N for signal N
    seconds: float
    stderr_tail: str
    stdout_tail: str = ""
    reason: str = ""  #: the judge's own words on a failure (judged runs only)

    @property
    def passed(self) -> bool:
        return self.status == "passed"


#: the whole environment of the launcher and of every process of a run (nothing of the evaluator's)
_ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        log.warning("sandbox process %d did not exit after SIGKILL", proc.pid)


@dataclass(frozen=True)
class JudgeJob:
    """What the judge process needs: trusted problem text, the tests, and the name they test."""

    context: str  #: trusted code run before the tests in the judge (prompt [+ canonical solution])
    test: str  #: defines ``check(candidate)``
    entry_point: str  #: the function of the sample's program that ``candidate`` stands for


def _sweep_world_writable(uids: set[int]) -> None:
    """Plain mode as root: remove what the sample's uids left at the top of the world-writable folders."""
    for folder in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        with contextlib.suppress(OSError):
            for entry in os.scandir(folder):
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_uid not in uids:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        os.unlink(entry.path)


def _read_verdict(fd: int, deadline: float, limit: int = 65536) -> bytes:
    """Everything the judge wrote to the verdict pipe: read until end-of-file (every write end closed:
    the judge has written and closed it, or is dead), or until ``deadline`` (``time.monotonic()``).

    Reading to the end, not just what is there when the launcher has been reaped, is what keeps a
    verdict from being lost whatever made that wait return (issue #23 item 8b)."""
    chunks, size = [], 0
    while size < limit:  # select and read are retried by Python itself when a signal interrupts them (PEP 475)
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _processes(iso: Isolation, limits: SandboxLimits) -> int:
    """RLIMIT_NPROC of a run: per dedicated uid, else on top of the user's current task count."""
    return limits.max_processes if iso.uid_drop else user_task_count() + 2 * limits.max_processes


def _config(mode: str, limits: SandboxLimits, iso: Isolation, slot: int) -> dict:
    """The launcher's job without the run's own parts (program, judge job, descriptors, folders): ``uids`` are the
    judge's and the sample's dedicated uids of worker ``slot`` (None: no uid drop here), ``sample_settings`` the
    candidate's ``key=value`` arguments (``_candidate.py``: only the limits a caller set)."""
    settings = {"output": _output_limit(limits), "digits": limits.max_int_digits}
    return {
        "mode": mode,
        "private_fs": iso.namespaces,
        "view": runtime_view(iso.python) if iso.namespaces else None,
        "seccomp": _SOURCES["seccomp"] if iso.seccomp else None,
        "tmpfs_mb": limits.tmpfs_mb,
        "max_files": limits.max_files,
        "python": iso.python,
        "uids": {"judge": slot_uid(2 * slot), "sample": slot_uid(2 * slot + 1)} if iso.uid_drop
        else {"judge": None, "sample": None},
        "nested_userns": iso.namespaces and not iso.uid_drop,
        "env": _ENVIRONMENT,
        "network_guard": not iso.namespaces,
        "wall_seconds": int(limits.timeout) + 5,
        "sources": {"judge": _SOURCES["judge"], "candidate": _SOURCES["candidate"]},
        "sample_settings": {key: value for key, value in settings.items() if value is not None},
        "limits": {
            "address_space": limits.memory_mb * _MB,
            "processes": _processes(iso, limits),
            "file_size": limits.file_size_mb * _MB,
            "cpu_seconds": int(limits.timeout) + 2,
            "open_files": limits.open_files,
        },
    }


def _command(iso: Isolation) -> list[str]:
    """The launcher's command line: in fresh namespaces when the machine allows them."""
    cmd = [sys.executable, "-I", "-S", "-c", _SOURCES["launcher"]]
    if iso.mode == "root-namespaces":
        return [shutil.which("unshare") or "unshare", *NS_FLAGS, *cmd]
    if iso.mode == "user-namespaces":
        return [shutil.which("unshare") or "unshare", "--user", "--map-root-user", *NS_FLAGS, *cmd]
    return cmd


def _launch(mode: str, program: str, limits: SandboxLimits, slot: int, job: dict | None) -> Outcome:
    """A cold run: start a launcher on ``program`` (and the judge on ``job``); wait; collect what came out."""
    iso = isolation(limits.python, limits.namespaces)
    config = _config(mode, limits, iso, slot)
    uids = config["uids"]
    host = Path(tempfile.mkdtemp(prefix="sc2tune-sample-"))
    verdict_r, verdict_w = os.pipe()
    try:
        if not iso.namespaces:
            os.chmod(host, 0o711)
            for name, uid in (("work", uids["sample"]), ("judge", uids["judge"])):
                (host / name).mkdir(mode=0o700)
                if uid is not None:
                    os.chown(host / name, uid, uid)
        config.update(program=program, job=job, verdict_fd=verdict_w, workdir=str(host / "work"),
                      judgedir=str(host / "judge"))
        cmd = _command(iso)
        start = time.monotonic()
        with open(host / "stdout", "w+b") as out, open(host / "stderr", "w+b") as err:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                        pass_fds=(verdict_w,), start_new_session=True, close_fds=True,
                                        env=_ENVIRONMENT, cwd=host)
            except OSError as error:
                return Outcome(None, False, 0.0, "", f"sc2tune sandbox: cannot start: {error}", b"")
            os.close(verdict_w)
            verdict_w = -1
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.write(json.dumps(config).encode("utf-8"))
            with contextlib.suppress(BrokenPipeError):
                proc.stdin.close()
            try:
                returncode: int | None = proc.wait(timeout=limits.timeout + _STARTUP_GRACE)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
                returncode = None
            # stragglers of the session (no-namespace mode); a no-op when the pid namespace is gone
            _kill_group(proc)
            seconds = time.monotonic() - start
            stdout, stderr = tail(out.fileno()), tail(err.fileno())
        verdict = _read_verdict(verdict_r, time.monotonic() + (0.0 if timed_out else _VERDICT_GRACE))
        if iso.uid_drop and not iso.namespaces:
            _sweep_world_writable({uid for uid in uids.values() if uid is not None})
        return Outcome(returncode, timed_out, seconds, stdout, stderr, verdict)
    finally:
        for fd in (verdict_r, verdict_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(host, ignore_errors=True)


def _output_limit(limits: SandboxLimits) -> int | None:
    """The candidate's output limit in characters (``max_output_mb`` * 2**20), None when unlimited."""
    return None if limits.max_output_mb is None else int(limits.max_output_mb * _MB)


def _limit_reason(reason: str, stderr: str, limits: SandboxLimits) -> str:
    """``reason`` of a failed run, naming the limit it hit when it hit one (else unchanged).

    Only ever relabels a failure (a sample that fakes a mark changes the words of its own failure)."""
    output = _output_limit(limits)
    if output is not None and _OUTPUT_LIMIT_MARK.format(limit=output) in stderr:
        return f"output limit hit: more than {limits.max_output_mb:g} MiB printed"
    if _DIGIT_LIMIT_TEXT in reason:  # Python's words quote the limit: "Exceeds the limit (N digits) ..."
        return f"int digit limit hit: {reason}"
    if _FILE_SIZE_TEXT in reason or _FILE_SIZE_TEXT in stderr:
        return f"file size limit hit ({limits.file_size_mb} MiB, RLIMIT_FSIZE): {reason or _FILE_SIZE_TEXT}"
    return reason


def _sandbox_failed(outcome: Outcome) -> bool:
    return outcome.returncode in (125, 126, None) and "sc2tune sandbox" in outcome.stderr


def run_program(source: str, limits: SandboxLimits, *, slot: int = 0) -> RunResult:
    """Run ``source`` as ``program.py`` in a fresh sandboxed process; block until it ends or times out.

    Status "passed" means only "exited with status 0": the program decides that itself, so this is
    not a judge of anything the program could want to fake (use :meth:`JudgePool.run_judged` for that).
    """
    outcome = _launch("program", source, limits, slot, None)
    if outcome.timed_out:
        return RunResult("timeout", None, outcome.seconds, outcome.stderr, outcome.stdout)
    if _sandbox_failed(outcome):
        return RunResult("error", outcome.returncode, outcome.seconds, outcome.stderr, outcome.stdout)
    status = "passed" if outcome.returncode == 0 else "failed"
    return RunResult(status, outcome.returncode, outcome.seconds, outcome.stderr, outcome.stdout)


class JudgePool:
    """Judges samples (:meth:`run_judged`) on worker slots; a context manager (closing ends its processes).

    With namespaces, each slot keeps a warm sandbox (module doc, "Warm and cold runs"); a run past its time
    kills the slot's sandbox (the next run starts a new one). Without namespaces (or ``warm=False``) every run
    is a cold one: a launcher started for it alone.

    One slot serves one run at a time (the caller hands slots out, as :func:`evaluate_code` does).
    """

    def __init__(self, limits: SandboxLimits, *, warm: bool = True) -> None:
        self.limits = limits
        self.isolation = isolation(limits.python, limits.namespaces)
        self._warm = warm and self.isolation.namespaces
        self._sandboxes: dict[int, WarmSandbox] = {}
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> JudgePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End every warm sandbox (their processes and namespaces)."""
        with self._lock:
            sandboxes, self._sandboxes, self._closed = list(self._sandboxes.values()), {}, True
        for sandbox in sandboxes:
            sandbox.close()

    def run_judged(self, program: str, job: JudgeJob, *, slot: int = 0) -> RunResult:
        """Judge ``program`` (the sample's code) with ``job``'s tests on worker ``slot`` (module doc).

        The status is "passed" only when the verdict pipe holds the judge's record for this run (its
        nonce) saying the tests' ``check`` returned normally. No verdict from a judge that ended badly is a
        failure; no verdict although everything exited 0 is status "error" with reason :data:`LOST_VERDICT`
        (an infrastructure fault: the caller retries it, it is never scored as a failure)."""
        nonce = secrets.token_hex(16)
        payload = {"context": job.context, "test": job.test, "entry_point": job.entry_point, "nonce": nonce}
        if self._warm:
            outcome = self._warm_run(program, payload, slot)
        else:
            outcome = _launch("judged", program, self.limits, slot, payload)
        return _judged_result(outcome, nonce, self.limits)

    def _sandbox(self, slot: int) -> WarmSandbox:
        with self._lock:
            if self._closed:
                raise WarmSandboxError("sc2tune sandbox: the judge pool is closed")
            sandbox = self._sandboxes.pop(slot, None)
        if sandbox is not None and not sandbox.alive:
            sandbox.close()
            sandbox = None
        if sandbox is None:
            config = _config("warm", self.limits, self.isolation, slot) | {"sources": _SOURCES}
            sandbox = WarmSandbox(_command(self.isolation), config, _ENVIRONMENT)
        return sandbox

    def _keep(self, slot: int, sandbox: WarmSandbox) -> None:
        with self._lock:
            if not self._closed and sandbox.alive:
                self._sandboxes[slot] = sandbox
                return
        sandbox.close()

    def _warm_run(self, program: str, payload: dict, slot: int) -> Outcome:
        try:
            sandbox = self._sandbox(slot)
        except WarmSandboxError as err:
            return Outcome(None, False, 0.0, "", str(err), b"")
        header = {"entry_point": payload["entry_point"], "processes": _processes(self.isolation, self.limits)}
        try:
            return sandbox.judge(program.encode("utf-8"), json.dumps(payload).encode("utf-8"), header,
                                 timeout=self.limits.timeout + _STARTUP_GRACE, read_verdict=_read_verdict,
                                 verdict_grace=_VERDICT_GRACE)
        finally:
            self._keep(slot, sandbox)


def _judged_result(outcome: Outcome, nonce: str, limits: SandboxLimits) -> RunResult:
    """The result of a judged run from what came out of it: only this run's record (``nonce``) counts."""
    record: dict = {}
    for line in outcome.verdict.decode("utf-8", errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            candidate = json.loads(line)
            if isinstance(candidate, dict) and candidate.get("nonce") == nonce:
                record = candidate
                break
    reason = str(record.get("reason", ""))
    if outcome.timed_out:
        status = "timeout"
    elif _sandbox_failed(outcome):
        status = "error"
    elif record.get("verdict") == "passed" and outcome.returncode != 0:
        status, reason = "failed", f"the judge reported a pass but exited with status {outcome.returncode}"
    elif record.get("verdict") in ("passed", "failed", "error"):
        status = record["verdict"]
    elif outcome.returncode == 0:  # the judge exits 0 only after writing a pass: the record went missing
        status, reason = "error", LOST_VERDICT
    else:
        status, reason = "failed", f"no verdict from the judge (exit status {outcome.returncode})"
    if status == "failed":
        reason = _limit_reason(reason, outcome.stderr, limits)
    return RunResult(status, outcome.returncode, outcome.seconds, outcome.stderr, outcome.stdout, reason)

