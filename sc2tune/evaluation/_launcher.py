"""Inside-the-sandbox launcher: runs as ``python -I -S _launcher.py CONFIG_JSON`` (stdlib only).

Started by :mod:`sc2tune.evaluation.sandbox`, usually as pid 1 of fresh pid + network + mount
namespaces (``unshare --net --pid --mount --fork --kill-child --mount-proc``). Layout of one run:

1. read the program source (the host folder may be hidden by step 2);
2. when ``tmpfs`` is set (root in a private mount namespace): mount size-capped tmpfs over ``/tmp``,
   ``/var/tmp`` and ``/dev/shm``; the sample's working folder is ``/tmp/sample`` on that tmpfs, so it
   cannot fill the host disk nor see the host's temporary files; otherwise it is the host folder;
3. fork; the child sets hard resource limits (address space, processes, file size, CPU seconds, open
   files, no core files), drops to the sandbox uid/gid with no supplementary groups when one is given,
   and ``execve``s the interpreter on the program with the scrubbed environment;
4. the launcher (still root, pid 1 of the namespace) waits for that child and exits with its status
   (128 + signal when it was killed); after ``wall_seconds`` it kills the child itself, so a sandbox
   whose evaluator died (Ctrl-C, crash) still ends. Its exit tears the pid namespace down: the kernel kills every
   process the sample left behind.

Exit statuses of its own: 125 = the launcher failed before exec, 126 = exec failed.
"""

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys

_NETWORK_GUARD = (
    "import socket as _s\n"
    "def _sc2_denied(*a, **k):\n"
    "    raise OSError('network access is disabled in the sc2tune sandbox')\n"
    "class _Sc2Socket(_s.socket):\n"
    "    def __init__(self, *a, **k):\n"
    "        _sc2_denied()\n"
    "_s.socket = _Sc2Socket\n"
    "_s.create_connection = _s.getaddrinfo = _s.socketpair = _sc2_denied\n"
    "del _s\n"
    "__file__ = 'program.py'\n"
    "exec(compile(open('program.py', encoding='utf-8').read(), 'program.py', 'exec'))\n"
)


def _mount_tmpfs(target: str, size_mb: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    flags = 0x2 | 0x4  # MS_NOSUID | MS_NODEV
    options = f"size={size_mb}m,mode=1777".encode()
    if libc.mount(b"tmpfs", target.encode(), b"tmpfs", flags, options) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount tmpfs on {target}: {os.strerror(err)}")


def _limit(name: str, value: int) -> None:
    kind = getattr(resource, name)
    resource.setrlimit(kind, (value, value))


def main() -> int:
    cfg = json.loads(sys.argv[1])
    with open(cfg["program"], encoding="utf-8") as f:
        source = f.read()
    workdir = cfg["workdir"]
    if cfg["tmpfs_mb"]:
        _mount_tmpfs("/tmp", cfg["tmpfs_mb"])
        for extra in ("/var/tmp", "/dev/shm"):
            if os.path.isdir(extra):
                with contextlib.suppress(OSError):
                    _mount_tmpfs(extra, 8)
        workdir = "/tmp/sample"
        os.mkdir(workdir, 0o700)
        with open(os.path.join(workdir, "program.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if cfg["uid"] is not None:
            os.chown(workdir, cfg["uid"], cfg["gid"])
            os.chown(os.path.join(workdir, "program.py"), cfg["uid"], cfg["gid"])
    env = dict(cfg["env"], HOME=workdir, TMPDIR=workdir)
    if cfg["network_guard"]:
        argv = [cfg["python"], "-I", "-c", _NETWORK_GUARD]
    else:
        argv = [cfg["python"], "-I", "program.py"]

    pid = os.fork()
    if pid == 0:
        try:
            os.chdir(workdir)
            limits = cfg["limits"]
            _limit("RLIMIT_AS", limits["address_space"])
            _limit("RLIMIT_NPROC", limits["processes"])
            _limit("RLIMIT_FSIZE", limits["file_size"])
            _limit("RLIMIT_CPU", limits["cpu_seconds"])
            _limit("RLIMIT_NOFILE", limits["open_files"])
            _limit("RLIMIT_CORE", 0)
            if cfg["uid"] is not None:
                os.setgroups([])
                os.setgid(cfg["gid"])
                os.setuid(cfg["uid"])
            os.umask(0o077)
            os.execve(argv[0], argv, env)
        except BaseException as err:  # noqa: BLE001 - report anything, then leave without cleanup
            try:
                os.write(2, f"sc2tune sandbox: cannot start the sample: {err}\n".encode())
            finally:
                os._exit(126)
    def _expire(signum, frame):  # the evaluator died or forgot us: never outlive the wall limit by much
        os.kill(pid, signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)

    signal.signal(signal.SIGALRM, _expire)
    signal.alarm(cfg["wall_seconds"])
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    try:
        code = main()
    except BaseException as error:  # noqa: BLE001
        try:
            os.write(2, f"sc2tune sandbox launcher: {error}\n".encode())
        finally:
            os._exit(125)
    os._exit(code)
