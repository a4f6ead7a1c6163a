"""A warm sandbox: one launcher + zygote kept running for a worker slot, forking a fresh run per sample.

The evaluator's side of ``_zygote.py`` (where the protocol and what one run gets are described): the
launcher is started once (``unshare`` + ``python -I -S -c <_launcher.py>``, ``mode == "warm"``, the job
on its stdin), builds the private root once and starts the zygote on one end of an ``AF_UNIX``
``SOCK_SEQPACKET`` socket pair; the other end stays here. :meth:`WarmSandbox.judge` makes one run's
five descriptors (the verdict pipe's write end; the job, the program, stdout and stderr as in-memory
files: nothing of a run is written to disk), :meth:`WarmSandbox.run` sends them with the request and
waits for the run's exit status. Closing the socket (this process
ending included) makes the zygote, then the launcher, exit; :meth:`WarmSandbox.kill` ends the whole
process group at once (a run past its time: the next run gets a new warm sandbox).

This module only starts, talks to and stops the processes; what a run's outcome means is
:mod:`sc2tune.evaluation.sandbox`'s business.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from sc2tune.evaluation._launcher import memfd

_MESSAGE_BYTES = 1 << 16


def tail(fd: int, limit: int = 4000) -> str:
    """The last ``limit`` bytes of the file open at ``fd`` (a run's stdout or stderr), as text; empty when it
    cannot be read."""
    try:
        size = os.fstat(fd).st_size
        return os.pread(fd, min(limit, size), max(0, size - limit)).decode("utf-8", errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True)
class Outcome:
    """What came out of one run, warm or cold (what it means is :mod:`sc2tune.evaluation.sandbox`'s business)."""

    returncode: int | None  #: the deciding process's exit status (128 + N for signal N); None: timed out or gone
    timed_out: bool
    seconds: float
    stdout: str  #: tails of the run's stdout and stderr (the sandbox's own words appended when it ended)
    stderr: str
    verdict: bytes  #: what the judge wrote to the verdict pipe


class WarmSandboxError(RuntimeError):
    """The warm sandbox could not be started, or it ended while it should have been answering."""


class WarmSandbox:
    """The processes of one warm sandbox (one worker slot); not thread-safe: one run at a time."""

    def __init__(self, cmd: list[str], config: dict, env: dict[str, str], *, start_timeout: float = 60.0) -> None:
        self._log = os.memfd_create("sc2tune-warm-log", os.MFD_CLOEXEC)  # the launcher's and zygote's own output
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        job = json.dumps(dict(config, control_fd=theirs.fileno())).encode("utf-8")
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=self._log, stderr=self._log,
                                          pass_fds=(theirs.fileno(),), start_new_session=True, close_fds=True,
                                          env=env, cwd="/")
        except OSError as err:
            self._control.close()
            os.close(self._log)
            raise WarmSandboxError(f"sc2tune sandbox: cannot start: {err}") from None
        finally:
            theirs.close()  # only the launcher (then the zygote) holds that end
        assert self._proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.write(job)
        with contextlib.suppress(BrokenPipeError):
            self._proc.stdin.close()
        try:
            reply = self._receive(time.monotonic() + start_timeout)
        except WarmSandboxError:
            reply = None
        if reply is None or reply.get("ready") is not True:
            why = tail(self._log, 2000)
            self.kill()
            os.close(self._log)
            raise WarmSandboxError(f"sc2tune sandbox: the warm sandbox did not start: {why}")

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None and self._control.fileno() >= 0

    def _receive(self, deadline: float) -> dict | None:
        """The zygote's next message; None when ``deadline`` passes; :class:`WarmSandboxError` when it ended.
        (``select`` is retried by Python itself when a signal interrupts it: PEP 475.)"""
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self._control], [], [], left)[0]:
            return None
        try:
            data = self._control.recv(_MESSAGE_BYTES)
        except OSError as err:
            raise WarmSandboxError(f"sc2tune sandbox: the warm sandbox's channel failed: {err}") from None
        if not data:
            raise WarmSandboxError(f"sc2tune sandbox: the warm sandbox ended: {tail(self._log, 2000)}")
        try:
            message = json.loads(data.decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            message = None
        if not isinstance(message, dict):
            raise WarmSandboxError("sc2tune sandbox: malformed message from the warm sandbox")
        return message

    def run(self, header: dict, fds: list[int], timeout: float) -> int | None:
        """Start one run (``header`` and its descriptors, see ``_zygote.py``); its exit status, or None
        when it has not ended within ``timeout`` seconds (then the sandbox is killed)."""
        try:
            socket.send_fds(self._control, [json.dumps(header).encode("utf-8")], fds)
        except OSError as err:
            self.kill()
            raise WarmSandboxError(f"sc2tune sandbox: the warm sandbox is gone ({err}): "
                                   f"{tail(self._log, 2000)}") from None
        try:
            reply = self._receive(time.monotonic() + timeout)
        except WarmSandboxError:
            self.kill()
            raise
        if reply is None:
            self.kill()
            return None
        status = reply.get("status")
        if type(status) is not int:
            self.kill()
            raise WarmSandboxError("sc2tune sandbox: malformed status from the warm sandbox")
        return status

    def judge(self, program: bytes, job: bytes, header: dict, *, timeout: float,
              read_verdict: Callable[[int, float], bytes], verdict_grace: float) -> Outcome:
        """One judged run: the verdict pipe and the run's in-memory files (job, program, stdout, stderr)
        made here and handed over; the verdict read with ``read_verdict(fd, deadline)`` once the run has
        ended (to the pipe's end, ``verdict_grace`` seconds at most; at once after a timeout)."""
        fds = [-1] * 6
        try:
            fds[5], fds[0] = os.pipe()
            fds[1], fds[2] = memfd(job), memfd(program)
            fds[3], fds[4] = memfd(), memfd()
            start = time.monotonic()
            try:
                returncode, gone = self.run(header, fds[:5], timeout), ""
            except WarmSandboxError as err:
                returncode, gone = None, str(err)
            seconds = time.monotonic() - start
            os.close(fds[0])  # our copy of the judge's end: the pipe ends with the run
            fds[0] = -1
            verdict = read_verdict(fds[5], time.monotonic() + (0.0 if returncode is None else verdict_grace))
            stderr = tail(fds[4]) + (f"\n{gone}" if gone else "")
            return Outcome(returncode, returncode is None and not gone, seconds, tail(fds[3]), stderr, verdict)
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)

    def kill(self) -> None:
        """End every process of the sandbox now (its pid namespaces go with the launcher)."""
        if self._proc.returncode is None:  # not reaped yet: its pid (= its group) cannot have been reused
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        self._control.close()

    def close(self) -> None:
        """Let the zygote see the end of its channel and exit; kill whatever is still there after a while."""
        self._control.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
        if self._log >= 0:
            os.close(self._log)
            self._log = -1
