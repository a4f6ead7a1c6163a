"""Inside-the-sandbox launcher: runs as ``python -I -S -c <this file>`` (stdlib only), job JSON on stdin.

Started by :mod:`sc2tune.evaluation.sandbox`, usually as pid 1 of fresh pid + network + mount + IPC
namespaces (``unshare --net --pid --mount --ipc --fork --kill-child --mount-proc``). The job arrives on
stdin, not on the command line (``/proc/PID/cmdline`` is readable by every process), and so do the
judge's and the candidate's sources (read once by the evaluator: no file of the package is read per run).
Layout of one run:

1. stop being dumpable (same-uid processes cannot ptrace it or open its ``/proc/PID/fd``); read the job;
2. ``private_fs`` (a private mount namespace): every mount is re-bound read-only, then a fresh tmpfs
   root is filled with read-only binds of the runtime only (``view``: see :func:`_private_filesystem`)
   and ``pivot_root`` makes it ``/``; the host's root is detached, so the problems, the tests and
   everything else not exposed are unreachable. Size- and inode-capped tmpfs are mounted on ``/tmp``,
   ``/var/tmp`` and ``/dev/shm``: the only writable places, gone when the namespace ends. No write of
   the sample reaches the host filesystem, and the number of files and their total size are bounded by
   the tmpfs (``nr_inodes``, ``size``) besides the per-file ``RLIMIT_FSIZE``. The sample works in
   ``/tmp/sample``, the judge in ``/tmp/judge``;
3. ``mode == "program"``: fork + exec ``python -I program.py`` (exit status only, no verdict);
   ``mode == "judged"``: fork the judge first (``_judge.py``, the verdict fd, the job on its stdin), wait
   for its "ready" byte, then fork the candidate (``_candidate.py`` over ``program.py``), each under its
   own uid when given, with only its own pipes: the candidate never holds the verdict fd;
4. every child gets hard resource limits (address space, processes, file size, CPU seconds, open
   files, no core files), drops to its uid/gid with no supplementary groups, or, when there is no uid
   to drop to (it would stay root of the namespaces), enters a nested user namespace (so it has no
   capability over the launcher's namespaces: it cannot unmount the tmpfs nor ptrace the judge); then
   it joins a fresh session keyring and installs the seccomp filter (``_seccomp.py``: no keyring calls;
   for the sample, no new process either), which ``execve`` keeps;
5. wait for the process that decides (the program, or the judge), kill the rest, exit with its status
   (128 + signal); after ``wall_seconds`` everything is killed, so a sandbox whose evaluator died still
   ends. Exiting tears the pid namespace down: the kernel kills whatever the sample left behind.

``mode == "warm"`` (a warm sandbox, see ``_zygote.py``): steps 1-2 once, then the zygote is started as
this process's child (``python -I`` with the job's sources, as root of the namespaces) on the control socket
``control_fd``; it forks one fresh, separately namespaced run per sample, so steps 3-5 happen per run
inside it. The launcher waits for the zygote and exits with its status.

Exit statuses of its own: 125 = the launcher failed before exec, 126 = exec failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import resource
import signal
import sys
import types
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Callable

_LIBC = ctypes.CDLL(None, use_errno=True)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
_MS_REMOUNT, _MS_BIND, _MS_REC = 0x20, 0x1000, 0x4000
_MNT_DETACH = 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_DEVICES = ("null", "zero", "full", "random", "urandom")
_MOUNT_FLAGS = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC, "noatime": 0x400,
                "nodiratime": 0x800, "relatime": 0x200000, "strictatime": 0x1000000}
_CLONE_NEWUSER = 0x10000000
_NETWORK_GUARD = (  # program mode without a network namespace: a best effort that C code can bypass
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


def _no_longer_dumpable() -> None:
    _LIBC.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int, data: bytes | None) -> None:
    if _LIBC.mount(source, target.encode(), fstype, flags, data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _unescape(path: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as octal (``\\040``). (``re`` is
    loaded anyway: ``json`` imports it.)"""
    return re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal.group(1), 8)), path)


def _remount_everything_read_only() -> None:
    """Re-bind every mount of this (private) namespace read-only, keeping its other per-mount flags."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target, options = _unescape(fields[4]), fields[5].split(",")
        if "ro" in options:
            continue
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for option in options:
            flags |= _MOUNT_FLAGS.get(option, 0)
        if "relatime" not in options and "noatime" not in options:
            flags |= _MOUNT_FLAGS["strictatime"]  # keep it: a locked atime flag must not change
        try:
            _mount(None, target, None, flags, None)
        except OSError as err:
            if err.errno in (errno.ENOENT, errno.ENOTDIR):  # hidden under another mount: unreachable
                continue
            raise


def _mount_scratch(size_mb: int, files: int) -> None:
    """The run's only writable places: fresh size- and inode-capped tmpfs on /tmp, /var/tmp and /dev/shm."""
    for target, size, count in (("/tmp", size_mb, files), ("/var/tmp", min(8, size_mb), 64),
                                ("/dev/shm", min(8, size_mb), 64)):
        options = f"size={size}m,nr_inodes={count},mode=1777".encode()
        _mount(b"tmpfs", target, b"tmpfs", _MS_NOSUID | _MS_NODEV, options)


def memfd(data: bytes = b"") -> int:
    """An anonymous in-memory file holding ``data``, at offset 0 (close-on-exec): a run's job, program or output,
    the zygote's settings; nothing of a run is written to disk. (:mod:`sc2tune.evaluation.warm` uses it too.)"""
    fd = os.memfd_create("sc2tune", os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _module(name: str, source: str) -> types.ModuleType:
    """A stdlib-only module of the package, from its source as the evaluator sent it in the job."""
    module = types.ModuleType(name)
    exec(compile(source, f"{name}.py", "exec"), module.__dict__)
    return module


def _expose(root: str, path: str) -> None:
    """Make host ``path`` appear at the same place under ``root``: a symlink is copied, a folder is
    bound with everything mounted below it, a file is bound; all of it read-only (the binds keep the
    read-only flag :func:`_remount_everything_read_only` put on their source)."""
    target = root + path
    if os.path.lexists(target):
        return
    os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
    elif os.path.isdir(path):
        os.mkdir(target, 0o755)
        _mount(path.encode(), target, None, _MS_BIND | _MS_REC, None)
    elif os.path.exists(path):
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
        _mount(path.encode(), target, None, _MS_BIND, None)


def _pivot_into(root: str) -> None:
    """``pivot_root(root, root)`` then detach the old root: nothing of the host is reachable any more
    except what was exposed under ``root``."""
    os.chdir(root)
    number = _PIVOT_ROOT[os.uname().machine]
    if _LIBC.syscall(ctypes.c_long(number), b".", b".") != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"pivot_root: {os.strerror(err)}")
    if _LIBC.umount2(b".", _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"detaching the host root: {os.strerror(err)}")
    os.chdir("/")


def _private_filesystem(tmpfs_mb: int, max_files: int, view: dict) -> None:
    """The sample's whole file system: a fresh root holding only ``view["expose"]`` (the runtime:
    /usr, /bin, /lib*, the interpreter's installation, a few /etc files), each read-only, with every
    ``view["hide"]`` folder (site-packages) covered by an empty read-only tmpfs; /dev with the five
    harmless character devices; this pid namespace's /proc; size- and inode-capped tmpfs on /tmp,
    /var/tmp and /dev/shm. The problems file, the tests, home folders, the checkout and sc2tune itself
    are not in it at all."""
    _remount_everything_read_only()
    root = "/tmp"  # any existing folder: what the host has there is not part of the new view
    _mount(b"tmpfs", root, b"tmpfs", _MS_NOSUID | _MS_NODEV, b"size=1m,nr_inodes=4096,mode=755")
    for path in view["expose"]:
        _expose(root, path)
    for path in view["hide"]:
        if os.path.isdir(root + path) and not os.path.islink(root + path):
            _mount(b"tmpfs", root + path, b"tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC,
                   b"size=4k,nr_inodes=1,mode=555")
    os.mkdir(root + "/dev", 0o755)
    _mount(b"tmpfs", root + "/dev", b"tmpfs", _MS_NOSUID | _MS_NOEXEC, b"size=4k,nr_inodes=64,mode=755")
    for device in _DEVICES:
        _expose(root, f"/dev/{device}")
    for name, link in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                       ("stderr", "/proc/self/fd/2")):
        os.symlink(link, f"{root}/dev/{name}")
    os.mkdir(root + "/dev/shm", 0o755)
    _mount(None, root + "/dev", None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NOEXEC, None)
    os.mkdir(root + "/proc", 0o555)
    _mount(b"/proc", root + "/proc", None, _MS_BIND | _MS_REC, None)
    for folder in ("/tmp", "/var", "/var/tmp"):
        os.mkdir(root + folder, 0o755)
    _mount(None, root, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    _pivot_into(root)
    _mount_scratch(tmpfs_mb, max_files)


def _private_dir(path: str, uid: int | None) -> str:
    os.mkdir(path, 0o700)
    if uid is not None:
        os.chown(path, uid, uid)
    return path


def _confine(cfg: dict, fds: dict[int, int], uid: int | None, cwd: str, *, sample: bool) -> dict[str, str]:
    """In a freshly forked child: keep exactly ``fds`` (target -> source) besides stdout/stderr (fd 0 is
    /dev/null unless given), close every other descriptor, enter ``cwd``, set the hard resource limits,
    drop to ``uid`` (or enter a nested user namespace), join a fresh session keyring and install the
    seccomp filter (``sample``: one process, no fork). Returns the environment the child must run with
    (``cfg["env"]`` with HOME = TMPDIR = ``cwd``)."""
    # first out of the way of the targets, then into place
    moved = {target: fcntl.fcntl(source, fcntl.F_DUPFD, 64) for target, source in fds.items()}
    for target, source in moved.items():
        os.dup2(source, target)
    if 0 not in fds:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
    os.closerange(max([2, *fds]) + 1, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    os.chdir(cwd)
    limits = cfg["limits"]
    for kind, value in ((resource.RLIMIT_AS, limits["address_space"]), (resource.RLIMIT_NPROC, limits["processes"]),
                        (resource.RLIMIT_FSIZE, limits["file_size"]), (resource.RLIMIT_CPU, limits["cpu_seconds"]),
                        (resource.RLIMIT_NOFILE, limits["open_files"]), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(kind, (value, value))  # hard limits: soft = hard, so the child cannot raise them
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    elif cfg["nested_userns"] and _LIBC.unshare(_CLONE_NEWUSER) != 0:
        raise OSError(ctypes.get_errno(), "cannot enter a nested user namespace")
    if _SECCOMP is not None:
        _SECCOMP.join_fresh_session_keyring()
        _SECCOMP.install(deny_processes=sample)
    os.umask(0o077)
    return dict(cfg["env"], HOME=cwd, TMPDIR=cwd)


def _spawn(cfg: dict, argv: list[str], fds: dict[int, int], uid: int | None, cwd: str, *, sample: bool) -> int:
    """Fork a child, :func:`_confine` it and exec ``argv`` in it. Returns the child's pid."""
    pid = os.fork()
    if pid:
        return pid
    try:
        env = _confine(cfg, fds, uid, cwd, sample=sample)
        os.execve(argv[0], argv, env)
    except BaseException as err:  # noqa: BLE001 - report anything, then leave without cleanup
        _die(f"sc2tune sandbox: cannot start {argv[-1][:40]!r}: {err}", 126)
    raise AssertionError("unreachable")


def _die(message: str, code: int) -> NoReturn:
    """Say ``message`` on stderr (fd 2, unbuffered) and leave at once with ``code``: the end of a forked child
    or launcher that failed. ``os._exit`` runs no clean-up of the parent's and raises nothing, even when the
    write itself fails."""
    try:
        os.write(2, f"{message}\n".encode())
    finally:
        os._exit(code)


def _wait(pid: int) -> int:
    """``pid``'s exit status, 128 + N when signal N ended it (``waitpid`` is retried on EINTR: PEP 475)."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _judged(cfg: dict, job: int, verdict: int, entry_point: str, workdir: str, judgedir: str, children: list[int],
            start: Callable[..., int]) -> int:
    """Steps 3 and 5 of a judged run, cold or warm (``_zygote.py``): the judge first, with the job (``job``, a
    file at offset 0) on its fd 0 and the verdict pipe's write end on fd 3; once it is ready, the candidate with
    only its call and answer pipes. ``start(fds, uid, cwd, sample=, args=)`` starts each, confined, and returns
    its pid (a cold run execs ``python -I -c SOURCE ARGS``, a warm one forks the zygote). The judge's status."""
    uids = cfg["uids"]
    ready_r, ready_w = os.pipe()
    calls_r, calls_w = os.pipe()
    answers_r, answers_w = os.pipe()
    children.append(start({0: job, 3: verdict, 4: calls_w, 5: answers_r, 6: ready_w}, uids["judge"], judgedir,
                          sample=False, args=[]))
    for fd in (job, ready_w, calls_w, answers_r, verdict):
        os.close(fd)
    ready = os.read(ready_r, 1)
    os.close(ready_r)
    if ready == b"R":
        args = [entry_point, *(["guard"] if cfg["network_guard"] else []),
                *[f"{key}={value}" for key, value in cfg["sample_settings"].items()]]
        children.append(start({3: calls_r, 4: answers_w}, uids["sample"], workdir, sample=True, args=args))
    os.close(calls_r)
    os.close(answers_w)
    return _wait(children[0])


def _warm(cfg: dict, children: list[int]) -> int:
    """Start the zygote (``_zygote.py``) on the control socket, hand it the job, wait for it to end."""
    config = memfd(json.dumps(cfg).encode("utf-8"))
    pid = os.fork()
    if pid == 0:
        try:
            control = fcntl.fcntl(cfg["control_fd"], fcntl.F_DUPFD, 64)
            os.dup2(config, 0)
            os.dup2(control, 3)
            os.closerange(4, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            os.execve(cfg["python"], [cfg["python"], "-I", "-c", cfg["sources"]["zygote"]], cfg["env"])
        except BaseException as err:  # noqa: BLE001
            _die(f"sc2tune sandbox: cannot start the zygote: {err}", 126)
    children.append(pid)
    os.close(config)
    os.close(cfg["control_fd"])  # only the zygote holds its end: the evaluator sees it end
    return _wait(pid)


_SECCOMP = None  # the _seccomp module when the filter applies (its source comes with the job)


def main() -> int:
    global _SECCOMP
    _no_longer_dumpable()
    cfg = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    if cfg["seccomp"]:
        _SECCOMP = _module("_seccomp", cfg["seccomp"])
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    children: list[int] = []

    def _expire(signum, frame):  # the evaluator died or forgot us: never outlive the wall limit by much
        for pid in children:
            _kill(pid)
        os._exit(128 + signal.SIGKILL)

    signal.signal(signal.SIGALRM, _expire)
    signal.alarm(cfg["wall_seconds"])
    uids = cfg["uids"]
    if cfg["private_fs"]:
        _private_filesystem(cfg["tmpfs_mb"], cfg["max_files"], cfg["view"])
    if cfg["mode"] == "warm":
        signal.alarm(0)  # lives as long as the evaluator keeps the control socket open
        return _warm(cfg, children)
    if cfg["private_fs"]:
        workdir = _private_dir("/tmp/sample", uids["sample"])
        judgedir = _private_dir("/tmp/judge", uids["judge"])
    else:
        workdir, judgedir = cfg["workdir"], cfg["judgedir"]
    program = os.path.join(workdir, "program.py")
    with open(program, "w", encoding="utf-8") as f:
        f.write(cfg["program"])
    if uids["sample"] is not None:
        os.chown(program, uids["sample"], uids["sample"])
    if cfg["mode"] == "judged":
        job = memfd(json.dumps(cfg["job"]).encode("utf-8"))

        def start(fds: dict[int, int], uid: int | None, cwd: str, *, sample: bool, args: list[str]) -> int:
            source = cfg["sources"]["candidate" if sample else "judge"]  # sent by the evaluator, never read here
            return _spawn(cfg, [cfg["python"], "-I", "-c", source, *args], fds, uid, cwd, sample=sample)

        status = _judged(cfg, job, cfg["verdict_fd"], cfg["job"]["entry_point"], workdir, judgedir, children, start)
    else:
        argv = [cfg["python"], "-I", *(["-c", _NETWORK_GUARD] if cfg["network_guard"] else ["program.py"])]
        children.append(_spawn(cfg, argv, {}, uids["sample"], workdir, sample=True))
        status = _wait(children[0])
    for pid in children[1:]:
        _kill(pid)
        _wait(pid)
    return status


if __name__ == "__main__":
    try:
        code = main()
    except BaseException as error:  # noqa: BLE001
        _die(f"sc2tune sandbox launcher: {error}", 125)
    os._exit(code)
