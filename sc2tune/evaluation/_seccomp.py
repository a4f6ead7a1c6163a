"""A seccomp-bpf filter for the sandbox's children, built and installed with ctypes (stdlib only).

Loaded by ``_launcher.py`` (which runs as ``python -I -S``, without the package on its path) from its
own folder, and imported by :mod:`sc2tune.evaluation.confinement` to report whether it applies here.

The filter, evaluated by the kernel on every system call of the process and of everything it
executes (filters are inherited across ``fork`` and ``execve`` and cannot be removed)::

    arch != this machine's native ABI        -> kill the process (no i386 / x32 back door)
    nr in {add_key, request_key, keyctl}     -> EPERM   (kernel keyrings outlive the process)
    deny_processes and nr in {fork, vfork}   -> EPERM
    deny_processes and nr == clone3          -> ENOSYS  (libc falls back to clone for threads)
    deny_processes and nr == clone
          and not (flags & CLONE_THREAD)     -> EPERM   (a new thread is allowed, a new process is not)
    deny_processes and nr in {shmget, msgget, semget, memfd_create, memfd_secret}
                                             -> EPERM   (memory held outside the address space)
    otherwise                                -> allow

With ``deny_processes`` the sample is a single process (threads included, they share its address
space), so ``RLIMIT_AS`` bounds its total memory: without it, every forked child gets its own
``RLIMIT_AS`` and N children hold N times the cap. (HumanEval's own harness also refuses ``fork``,
``subprocess`` and ``os.system`` inside a sample.) The same flag refuses the objects whose memory
``RLIMIT_AS`` does not see once they are unmapped: a System V shared memory segment keeps its pages after
``shmdt`` (the namespace's ``shmall`` is unbounded), System V message queues and semaphore sets hold
kernel memory, and a memfd is a file outside the capped tmpfs (each up to ``RLIMIT_FSIZE``, as many as
``RLIMIT_NOFILE``): with them a sample capped at 128 MiB held 992 MiB. No standard-library module uses
them (``os.memfd_create`` is only a binding); POSIX shared memory lives in the capped ``/dev/shm``.

Only x86_64 and aarch64 are known here (:func:`supported`); elsewhere nothing is installed and the
sandbox reports it.
"""

import ctypes
import errno
import os
import struct

_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_OFFSET_NR, _OFFSET_ARCH, _OFFSET_ARG0_LOW = 0, 4, 16  # struct seccomp_data, little-endian
_CLONE_THREAD = 0x00010000
_KEYCTL_JOIN_SESSION_KEYRING = 1
#: calls whose memory outlives its mapping (see the module docstring), refused with the processes
_OUTSIDE_ADDRESS_SPACE = ("shmget", "msgget", "semget", "memfd_create", "memfd_secret")

#: per machine: audit arch, first number of a foreign ABI sharing this arch (x32) or None, syscall numbers
_ABI = {
    "x86_64": (0xC000003E, 0x40000000, {"add_key": 248, "request_key": 249, "keyctl": 250,
                                        "clone": 56, "fork": 57, "vfork": 58, "clone3": 435,
                                        "shmget": 29, "semget": 64, "msgget": 68, "memfd_create": 319,
                                        "memfd_secret": 447}),
    "aarch64": (0xC00000B7, None, {"add_key": 217, "request_key": 218, "keyctl": 219,
                                   "clone": 220, "clone3": 435, "msgget": 186, "semget": 190, "shmget": 194,
                                   "memfd_create": 279, "memfd_secret": 447}),
}


def supported() -> bool:
    """True when this machine's ABI is one the filter knows."""
    return os.uname().machine in _ABI


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program(deny_processes: bool) -> bytes:
    """The filter as raw ``struct sock_filter`` instructions (see the module docstring for the rules)."""
    arch, foreign, nr = _ABI[os.uname().machine]
    kill, allow = _insn(_RET, 0, 0, _RET_KILL_PROCESS), _insn(_RET, 0, 0, _RET_ALLOW)
    code = [_insn(_LD_ABS_W, 0, 0, _OFFSET_ARCH), _insn(_JEQ, 1, 0, arch), kill,
            _insn(_LD_ABS_W, 0, 0, _OFFSET_NR)]
    if foreign is not None:
        code += [_insn(_JGE, 0, 1, foreign), kill]
    denied = [(nr[name], errno.EPERM) for name in ("add_key", "request_key", "keyctl")]
    if deny_processes:
        denied += [(nr[name], errno.EPERM) for name in ("fork", "vfork") if name in nr]
        denied += [(nr[name], errno.EPERM) for name in _OUTSIDE_ADDRESS_SPACE]
        denied.append((nr["clone3"], errno.ENOSYS))
    for number, error in denied:
        code += [_insn(_JEQ, 0, 1, number), _insn(_RET, 0, 0, _RET_ERRNO | error)]
    if deny_processes:
        code += [_insn(_JEQ, 0, 2, nr["clone"]), _insn(_LD_ABS_W, 0, 0, _OFFSET_ARG0_LOW),
                 _insn(_JSET, 0, 1, _CLONE_THREAD)]
    code += [allow, _insn(_RET, 0, 0, _RET_ERRNO | errno.EPERM)]
    return b"".join(code)


def join_fresh_session_keyring() -> None:
    """``keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)``: leave the inherited session keyring for a new, empty,
    anonymous one (best effort: a kernel without keyrings, or a uid over its key quota, keeps the old one;
    the filter denies every keyring call afterwards anyway)."""
    if not supported():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall(ctypes.c_long(_ABI[os.uname().machine][2]["keyctl"]), ctypes.c_long(_KEYCTL_JOIN_SESSION_KEYRING),
                 ctypes.c_void_p(None))


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(deny_processes: bool) -> None:
    """Set no_new_privs and install :func:`program` on the calling thread (then ``execve`` keeps it).

    Raises OSError when the kernel refuses: a sandbox child must not run without its filter."""
    libc = ctypes.CDLL(None, use_errno=True)
    raw = program(deny_processes)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    fprog = _SockFprog(len(raw) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    ulong = ctypes.c_ulong
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(_PR_SET_SECCOMP, ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog), ulong(0), ulong(0)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot install the seccomp filter: {os.strerror(err)}")
