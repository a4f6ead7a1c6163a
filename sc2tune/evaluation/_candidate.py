"""Candidate side of a judged run: executes the sample, then answers the judge's calls (stdlib only).

Runs as ``python -I -c <_wire.py + this file> [guard]`` in the sample's process, as the sample's uid,
with the working folder holding ``program.py`` (prompt + completion + suffix: never the tests). Channel:
fd 3 carries calls from the judge, fd 4 carries answers back. Protocol, one message each way:

1. after executing ``program.py`` as ``__main__``: ``{"ready": true}``, or ``{"failed": "why"}`` when the
   program raised or the entry point is missing;
2. for every ``{"call": [args, kwargs]}``: ``{"return": value}`` or ``{"raise": [type name, message]}``.

Nothing here is trusted. Everything in this process (this loop included) is the sample's to change,
so whatever it sends is simply "the candidate's result"; the judge, in another process, decodes it as
plain data and lets the test's own asserts decide. The process ending (``os._exit(0)``, a crash, a
kill) before answering is seen by the judge as end-of-file: a failure.
"""

import sys as _sys

_CALLS_FD, _ANSWERS_FD = 3, 4


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
    module = types.ModuleType("__main__")
    module.__file__ = "program.py"
    namespace = module.__dict__
    _sys.modules["__main__"] = module
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
