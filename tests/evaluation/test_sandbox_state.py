"""Nothing a sample leaves behind reaches a later (or a concurrent) sample: sample A writes through every
channel that could outlive it, sample B, through the real sandbox, looks for it.

The channels: the kernel keyrings (the user keyring of a uid outlives every process of that uid, and
``/proc/keys`` lists it), System V shared memory, files in the writable folders and in the working
folder, and abstract unix sockets (a concurrent sample on another worker slot).
"""

from __future__ import annotations

import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from sc2tune.evaluation.sandbox import SandboxLimits, isolation, run_program

LIMITS = SandboxLimits(timeout=6.0, memory_mb=512, max_processes=24)
#: add_key, request_key, keyctl by machine (the kernel's syscall tables)
KEYRING_SYSCALLS = {"x86_64": (248, 249, 250), "aarch64": (217, 218, 219)}

_PRELUDE = """
import ctypes, errno, json, os
libc = ctypes.CDLL(None, use_errno=True)
ADD_KEY, REQUEST_KEY, KEYCTL = {calls!r}
SECRET, DESC, SHM_KEY = {secret!r}, {desc!r}, {shm_key!r}
report = {{}}
def failure():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
"""

WRITER = """
for name, keyring in (("user", -4), ("session", -3), ("user-session", -5)):
    serial = libc.syscall(ADD_KEY, b"user", DESC.encode(), SECRET.encode(), len(SECRET), ctypes.c_long(keyring))
    report["add_key " + name] = "added" if serial > 0 else failure()
shm = libc.shmget(SHM_KEY, 4096, 0o1666)  # IPC_CREAT | rw for everyone
report["shm"] = "created" if shm >= 0 else failure()
if shm >= 0:
    libc.shmat.restype = ctypes.c_void_p
    ctypes.memmove(libc.shmat(shm, None, 0), SECRET.encode(), len(SECRET))
for folder in ("/tmp", "/var/tmp", "/dev/shm", os.getcwd(), os.environ["HOME"]):
    try:
        with open(os.path.join(folder, DESC), "w") as f:
            f.write(SECRET)
        os.chmod(os.path.join(folder, DESC), 0o666)
        os.chmod(folder, 0o777)
    except OSError:
        pass
print(json.dumps(report))
"""

READER = """
found = []
try:
    if DESC in open("/proc/keys").read():
        found.append("/proc/keys")
except OSError:
    pass
for keyring in (-4, -3, -5, 0):
    serial = libc.syscall(REQUEST_KEY, b"user", DESC.encode(), None, ctypes.c_long(keyring))
    if serial > 0:
        found.append(f"request_key {keyring}")
    serial = libc.syscall(KEYCTL, 10, ctypes.c_long(keyring), b"user", DESC.encode(), 0)  # KEYCTL_SEARCH
    if serial > 0:
        found.append(f"keyctl search {keyring}")
if libc.shmget(SHM_KEY, 0, 0) >= 0:
    found.append("shm")
for top in ("/tmp", "/var/tmp", "/dev/shm"):
    for folder, _, files in os.walk(top):
        if DESC in files:
            found.append(os.path.join(folder, DESC))
print(json.dumps({"found": found}))
"""


def _calls() -> tuple[int, int, int]:
    calls = KEYRING_SYSCALLS.get(os.uname().machine)
    if calls is None:
        pytest.skip(f"keyring syscall numbers unknown for {os.uname().machine}")
    return calls


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_a_later_sample_finds_nothing_an_earlier_one_left() -> None:
    secret = secrets.token_hex(8)  # a fresh name: a key left by an older, unfixed run cannot be found
    fields = {"calls": _calls(), "secret": secret, "desc": f"sc2tune-probe-{secret}",
              "shm_key": int(secret[:7], 16)}
    writer = run_program(_PRELUDE.format(**fields) + WRITER, LIMITS, slot=0)
    assert writer.passed, writer.stderr_tail
    wrote = _last_json(writer.stdout_tail)
    # the keyring calls are refused outright (the seccomp filter), not merely namespaced
    assert {wrote[f"add_key {name}"] for name in ("user", "session", "user-session")} == {"EPERM"}, wrote
    reader = run_program(_PRELUDE.format(**fields) + READER, LIMITS, slot=0)  # same slot: the same uids
    assert reader.passed, reader.stderr_tail
    assert _last_json(reader.stdout_tail) == {"found": []}


ABSTRACT_SERVER = """
import socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind({name!r})
s.listen(4)
s.settimeout(2.5)
try:
    c, _ = s.accept()
    c.sendall(b"{secret}")
    print("accepted")
except OSError:
    print("nobody came")
"""
ABSTRACT_CLIENT = """
import socket, time
got = "nothing"
deadline = time.monotonic() + 2.0
while time.monotonic() < deadline:
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect({name!r})
        got = c.recv(64).decode()
        break
    except OSError:
        time.sleep(0.05)
print("got", got)
"""


def test_concurrent_samples_cannot_meet_on_an_abstract_unix_socket() -> None:
    if not isolation().namespaces:
        pytest.skip("abstract sockets are per network namespace; there is none here")
    secret = secrets.token_hex(8)
    name = f"\0sc2tune-probe-{secret}"
    with ThreadPoolExecutor(2) as pool:
        server = pool.submit(run_program, ABSTRACT_SERVER.format(name=name, secret=secret), LIMITS, slot=0)
        client = pool.submit(run_program, ABSTRACT_CLIENT.format(name=name), LIMITS, slot=1)
        served, asked = server.result(), client.result()
    assert served.passed and asked.passed, (served.stderr_tail, asked.stderr_tail)
    assert "got nothing" in asked.stdout_tail and secret not in asked.stdout_tail
    assert "nobody came" in served.stdout_tail
