"""Inside a warm sandbox: the zygote that forks one fresh, confined run per sample (stdlib only).

Started by ``_launcher.py`` (``mode == "warm"``) as ``python -I -c <this file>`` once the private root
exists, as root of the sandbox's namespaces, with the job JSON on fd 0 and the control socket (an
``AF_UNIX`` ``SOCK_SEQPACKET`` socket whose other end only the evaluator holds) on fd 3. What a cold run
pays per sample is paid here once: the namespaces, the private root, the interpreter's start and the
imports of the judge, the candidate and the wire code (their sources come in the job, executed as
modules ``_launcher``, ``_judge``, ``_candidate``, ``_seccomp``; nothing is read from sc2tune's folder).
This process never runs sample code, never reads a job, a program or a verdict: it holds only the
job's settings, so a process forked from it has nothing of another sample.

Control protocol, one message each way per run::

    evaluator -> zygote  {"entry_point": NAME, "processes": N}  + 5 descriptors (SCM_RIGHTS):
                         verdict pipe (write end), job, program (memfds at offset 0), stdout, stderr
    zygote -> evaluator  {"status": S}   S: the run's exit status (the judge's; 128 + N for signal N)

The zygote sends ``{"ready": true}`` once it is set up, and exits when the evaluator closes its end.

One run, forked from the zygote (so every run starts from the same pristine state):

1. the fork puts the run's stdout/stderr on fds 1/2 and enters fresh mount, IPC, network and pid
   namespaces (``unshare``), then forks the run's init (pid 1 of the new pid namespace) and waits;
2. the init makes the mounts private, mounts a new read-only ``/proc`` (this run's pids only, read-only
   as in a cold run) and fresh size- and inode-capped tmpfs on ``/tmp``, ``/var/tmp`` and ``/dev/shm``
   (nothing a previous sample wrote is there), writes ``/tmp/sample/program.py``, arms the wall-clock
   alarm;
3. as a cold launcher does (``_launcher.py`` steps 3-5): the judge is forked first with the job on fd 0
   and the verdict pipe on fd 3; once it is ready, the candidate, with only its call/answer pipes. Each
   is confined by the launcher's own ``_confine`` (descriptors closed, rlimits, its uid or a nested user
   namespace, fresh session keyring, seccomp filter) and then runs ``_judge._judge()`` /
   ``_candidate._serve()`` in the forked interpreter instead of exec'ing a new one;
4. the init waits for the judge, and its exit ends the pid namespace: the kernel kills whatever is left.

Nothing of a run outlives it: its processes die with its pid namespace, its files with its tmpfs, its
IPC objects and sockets with its IPC and network namespaces; keyrings are refused by the filter.
"""

import contextlib
import json
import os
import signal
import socket
import sys
import types

_CONTROL_FD = 3
_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWNET, _CLONE_NEWPID = 0x20000, 0x08000000, 0x40000000, 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 0x1, 0x2, 0x4, 0x8, 0x4000, 0x40000
_RUN_FDS = 5  # verdict, job, program, stdout, stderr


def _module(name, source):
    module = types.ModuleType(name)
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


def _receive(control):
    """One request and the descriptors that came with it (``socket.recv_fds``, spelled out for Pythons
    before 3.9); a truncated set of descriptors is closed and reported as none."""
    import array

    fds = array.array("i")
    message, ancillary, flags, _ = control.recvmsg(1 << 16, socket.CMSG_SPACE(_RUN_FDS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - (len(data) % fds.itemsize)])
    if flags & socket.MSG_CTRUNC:
        for fd in fds:
            os.close(fd)
        return message, []
    return message, list(fds)


def _finish(code):
    """Leave a forked judge or candidate as an interpreter would at its end (exit handlers, streams
    flushed), without running anything of the zygote's own frames."""
    import atexit

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            with contextlib.suppress(BaseException):  # the sample may have replaced or closed them
                stream.flush()
        os._exit(code)


def _exit_code(exit_):
    """The status ``raise SystemExit(code)`` gives at the top of an interpreter."""
    code = exit_.code
    if code is None:
        return 0
    if type(code) is int:
        return code & 0xFF
    with contextlib.suppress(BaseException):
        sys.stderr.write(f"{code}\n")
    return 1


def _fork_child(cfg, launcher, fds, uid, cwd, *, sample, argv, body):
    """Fork; in the child, confine it as ``_launcher._spawn`` does, then run ``body()`` in place of an exec
    of ``python -I -c SOURCE ARGV...``. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    try:
        env = launcher._confine(cfg, fds, uid, cwd, sample=sample)
        import atexit

        atexit._clear()  # nothing of the zygote's runs at this process's end
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        sys.argv = ["-c", *argv]
        if "random" in sys.modules:  # a fresh interpreter seeds it from the OS
            sys.modules["random"].seed()
    except BaseException as err:  # noqa: BLE001
        launcher._die(f"sc2tune sandbox: cannot start {argv[:1]!r}: {err}", 126)
    try:
        body()
    except SystemExit as exit_:
        _finish(_exit_code(exit_))
    except BaseException:  # noqa: BLE001 - as an uncaught exception at the top of an interpreter
        try:
            sys.excepthook(*sys.exc_info())
        finally:
            _finish(1)
    _finish(0)
    raise AssertionError("unreachable")


def _init(cfg, mods, header, fds):
    """Pid 1 of the run's pid namespace: its file system, then judge and candidate (see the docstring)."""
    launcher, judge, candidate = mods["_launcher"], mods["_judge"], mods["_candidate"]
    verdict_w, job, program, stdout, stderr = fds
    os.close(stdout)  # already fds 1 and 2
    os.close(stderr)
    children = []

    def expire(signum, frame):
        for pid in children:
            launcher._kill(pid)
        os._exit(128 + signal.SIGKILL)

    signal.signal(signal.SIGALRM, expire)
    signal.alarm(cfg["wall_seconds"])
    launcher._mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    launcher._mount(b"proc", "/proc", b"proc", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None)
    launcher._mount_scratch(cfg["tmpfs_mb"], cfg["max_files"])
    uids = cfg["uids"]
    workdir = launcher._private_dir("/tmp/sample", uids["sample"])
    judgedir = launcher._private_dir("/tmp/judge", uids["judge"])
    path = os.path.join(workdir, "program.py")
    with open(path, "wb") as f, open(program, "rb") as source:  # the memfd, read to its end and closed
        f.write(source.read())
    if uids["sample"] is not None:
        os.chown(path, uids["sample"], uids["sample"])
    run_cfg = dict(cfg, limits=dict(cfg["limits"], processes=header["processes"]))

    def start(fds, uid, cwd, *, sample, args):
        return _fork_child(run_cfg, launcher, fds, uid, cwd, sample=sample, argv=args,
                           body=candidate._serve if sample else judge._judge)

    status = launcher._judged(run_cfg, job, verdict_w, header["entry_point"], workdir, judgedir, children, start)
    for pid in children[1:]:
        launcher._kill(pid)
    return status


def _run(cfg, mods, header, fds):
    """One run (see the module docstring); returns its exit status."""
    launcher = mods["_launcher"]
    pid = os.fork()
    if pid == 0:
        code = 125
        try:
            os.dup2(fds[3], 1)
            os.dup2(fds[4], 2)
            if launcher._LIBC.unshare(_CLONE_NEWNS | _CLONE_NEWIPC | _CLONE_NEWNET | _CLONE_NEWPID) != 0:
                raise OSError(launcher.ctypes.get_errno(), "unshare of the run's namespaces failed")
            init = os.fork()
            if init == 0:
                try:
                    code = _init(cfg, mods, header, fds)
                except BaseException as err:  # noqa: BLE001
                    os.write(2, f"sc2tune sandbox: the run's set-up failed: {err}\n".encode())
                    code = 125
                os._exit(code)
            for fd in fds:
                os.close(fd)
            code = launcher._wait(init)
        except BaseException as err:  # noqa: BLE001
            launcher._die(f"sc2tune sandbox: cannot start the run: {err}", 125)
        os._exit(code)
    for fd in fds:
        os.close(fd)
    return launcher._wait(pid)


def main():
    with open(0, "rb", closefd=False) as f:
        cfg = json.loads(f.read().decode("utf-8"))
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sources = cfg["sources"]
    mods = {name: _module(name, sources[key]) for name, key in
            (("_launcher", "launcher"), ("_judge", "judge"), ("_candidate", "candidate"))}
    mods["_launcher"]._no_longer_dumpable()
    if cfg["seccomp"]:
        mods["_launcher"]._SECCOMP = _module("_seccomp", cfg["seccomp"])
    import collections  # noqa: F401 - what the wire code imports on first use: once, here
    import decimal  # noqa: F401
    import fractions  # noqa: F401
    import gc

    gc.collect()
    gc.freeze()  # what is here stays untouched by a fork's collections: its pages stay shared, not copied
    control = socket.socket(fileno=_CONTROL_FD)
    control.send(json.dumps({"ready": True}).encode())
    while True:
        message, fds = _receive(control)
        if not message:
            return 0
        if len(fds) != _RUN_FDS:
            for fd in fds:
                os.close(fd)
            control.send(json.dumps({"status": 125, "error": "malformed run request"}).encode())
            continue
        status = _run(cfg, mods, json.loads(message.decode("utf-8")), fds)
        control.send(json.dumps({"status": status}).encode())


if __name__ == "__main__":  # run as ``python -c`` source, never on import
    try:
        code = main()
    except BaseException as error:  # noqa: BLE001
        try:
            os.write(2, f"sc2tune sandbox zygote: {error}\n".encode())
        finally:
            os._exit(125)
    os._exit(code)
