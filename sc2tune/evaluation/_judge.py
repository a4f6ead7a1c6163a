"""Judge side of a judged run: runs the problem's tests against the candidate process (stdlib only).

Runs as ``python -I -c <_wire.py + this file>`` in its own process (in a warm sandbox: ``_judge()``
in a process forked from the zygote, which never ran sample code; ``_zygote.py``), under its own uid when
the sandbox can drop privileges, started (and made ready) before the sample's process exists. No code of
the sample ever runs in this process, so the tests execute with this interpreter's own builtins,
``AssertionError``, ``isinstance``, import system and test names, whatever the sample does to its own.

File descriptors:

* 0: the job, one JSON object ``{"context", "test", "entry_point", "nonce"}`` (read to the end);
* 3: the verdict channel. Only this process holds it (the launcher closed its copy and never gave one
  to the sample); it leads straight to the evaluator, which counts a pass only from a record written
  here: ``{"nonce", "verdict": "passed" | "failed" | "error", "reason", "calls"}``;
* 4 / 5: calls to / answers from the candidate process (see ``_candidate.py``);
* 6: one byte to the launcher once the job is read, so the sample is started only after the job has
  left every pipe (and this process is no longer dumpable).

How the tests run: ``context`` (trusted problem text: the prompt, completed by the canonical solution
when there is one) and ``test`` are executed here; ``check`` is then called with a proxy in place of
the candidate (the entry point's name is bound to the same proxy). Each call of the proxy sends its
arguments as plain data to the candidate process and returns the decoded answer, which can only be
made of exact builtin and standard-library value types that this process builds itself (see
``_wire.py``: an iterator or generator arrives as an iterator over the items it yielded). The verdict is "passed" only when ``check`` returns normally.

The judge's own int <-> decimal str conversions have no digit limit (``sys.set_int_max_str_digits(0)``):
the tests are trusted code, and a test that builds or prints an int of more than Python's default 4,300
digits must not fail the sample. ``SandboxLimits.max_int_digits`` limits the sample's process only.
"""

import sys as _sys

_VERDICT_FD, _CALLS_FD, _ANSWERS_FD, _READY_FD = 3, 4, 5, 6


def _no_longer_dumpable():
    """prctl(PR_SET_DUMPABLE, 0): processes of the same uid cannot ptrace us nor open /proc/PID/fd|mem."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _where(err, test):
    """`` at test line N: <source>`` for the innermost frame of the test code in ``err``'s traceback."""
    tb, line = err.__traceback__, 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "test.py":
            line = tb.tb_lineno
        tb = tb.tb_next
    lines = test.splitlines()
    return f" at test line {line}: {lines[line - 1].strip()}" if 0 < line <= len(lines) else ""


class CandidateGone(BaseException):
    """The candidate process stopped answering (it exited, crashed, closed its channel or sent something
    that is not a well-formed answer). A BaseException, so a test's ``except Exception`` cannot swallow
    it; and the judge remembers it, so even ``except BaseException`` in a test cannot turn it into a pass."""


class NotJudgeable(BaseException):
    """The test passes the candidate something that is not plain data: this judge cannot run it."""


def _judge():
    import builtins
    import json
    import os

    _no_longer_dumpable()
    if hasattr(_sys, "set_int_max_str_digits"):  # Python >= 3.11: the tests' own int <-> str conversions
        _sys.set_int_max_str_digits(0)  # have no digit limit (the sample's limit is the sample's, see above)
    with open(0, "rb", closefd=False) as f:  # fd 0 to its end, not Python's stdin (a warm judge inherits the zygote's)
        job = json.loads(f.read().decode("utf-8"))
    os.write(_READY_FD, b"R")
    os.close(_READY_FD)
    calls = 0
    broken = []  # the first CandidateGone / NotJudgeable raised: it decides the verdict

    def verdict(kind, reason):
        record = {"nonce": job["nonce"], "verdict": kind, "reason": reason[:2000], "calls": calls}
        os.write(_VERDICT_FD, (json.dumps(record) + "\n").encode("utf-8"))
        os.close(_VERDICT_FD)
        _sys.exit({"passed": 0, "failed": 1}.get(kind, 2))

    def gone(reason):
        broken.append(CandidateGone(reason))
        return broken[-1]

    def answer():
        try:
            return wire_receive(_ANSWERS_FD)  # noqa: F821
        except EOFError:
            raise gone("the sample's process ended before answering") from None
        except (WireError, RecursionError, MemoryError) as err:  # noqa: F821
            raise gone(f"malformed answer from the sample's process: {err}") from None

    def candidate(*args, **kwargs):
        nonlocal calls
        if broken:
            raise broken[0]
        calls += 1
        try:
            call = {"call": wire_encode([list(args), kwargs])}  # noqa: F821
        except WireError as err:  # noqa: F821
            broken.append(NotJudgeable(f"the test passes the candidate a value that is not plain data ({err}); "
                                       "this judge only runs tests whose arguments are builtin values"))
            raise broken[-1] from None
        try:
            wire_send(_CALLS_FD, call)  # noqa: F821
        except BrokenPipeError:
            raise gone("the sample's process ended before answering") from None
        message = answer()
        if "return" in message:
            try:
                return wire_decode(message["return"])  # noqa: F821
            except (WireError, TypeError, ValueError, RecursionError) as err:  # noqa: F821
                raise gone(f"the sample's answer is not plain data: {err}") from None
        raised = message.get("raise")
        if type(raised) is list and len(raised) == 2 and all(type(x) is str for x in raised):
            if raised[0] == "WireError":  # the candidate side could not encode its own result
                raise gone(f"the candidate's result is not plain data: {raised[1]}")
            kind = getattr(builtins, raised[0], None)
            # StopIteration & co. would end the test's own loops early (``all(map(candidate, ...))``
            # would hold vacuously): only ordinary exceptions are raised as themselves
            if isinstance(kind, type) and issubclass(kind, Exception) \
                    and not issubclass(kind, (StopIteration, StopAsyncIteration, AssertionError)):
                raise kind(raised[1])
            raise RuntimeError(f"the candidate raised {raised[0]}: {raised[1]}")
        raise gone("malformed answer from the sample's process")

    namespace = {"__name__": "__judge__", "__builtins__": builtins}
    try:
        exec(compile(job["context"], "problem.py", "exec"), namespace)
        exec(compile(job["test"], "test.py", "exec"), namespace)
        check = namespace["check"]
    except BaseException as err:  # noqa: BLE001 - the problem itself is broken: not the sample's fault
        verdict("error", f"the problem's tests cannot be set up: {type(err).__name__}: {err}")
    candidate.__name__ = candidate.__qualname__ = job["entry_point"]
    namespace[job["entry_point"]] = candidate
    try:
        first = answer()
    except CandidateGone as err:
        verdict("failed", str(err))
    if first.get("ready") is not True:
        failed = first.get("failed")
        verdict("failed", f"the sample failed before the tests: {failed if type(failed) is str else '?'}")
    try:
        check(candidate)
    except AssertionError as err:
        if not broken:
            verdict("failed", f"test assertion failed{_where(err, job['test'])}"
                              f"{': ' + str(err) if str(err) else ''}")
    except BaseException as err:  # noqa: BLE001 - any way out of check but returning is a failure
        if not broken:
            verdict("failed", f"{type(err).__name__}: {err}")
    else:
        if not broken:
            verdict("passed", "")
    verdict("error" if isinstance(broken[0], NotJudgeable) else "failed", str(broken[0]))


if __name__ == "__main__":  # run as ``python -c`` source, never on import
    _judge()
