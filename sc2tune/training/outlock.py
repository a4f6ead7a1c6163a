"""One run per output folder: an exclusive lock held on ``output_dir`` for the whole of ``train``.

Two ``train`` commands writing into one folder would interleave ``metrics.jsonl`` and overwrite each
other's checkpoints while both report success. The main process of a run takes an operating-system lock
(``flock`` through the ``filelock`` package) on ``OUTPUT/.sc2tune-train.lock`` before it reads anything
and keeps it until it returns; a second run finds it taken and stops at once with a clear error. The
kernel drops the lock when its holder dies (killed, preempted, out of memory), so a stale lock never
blocks a ``--resume``. The lock file stays (deleting a lock file races with the next holder); it is empty.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from sc2tune.errors import UserError
from sc2tune.runs import RunFolder


@contextlib.contextmanager
def output_lock(out: Path, *, main_process: bool) -> Iterator[None]:
    """Hold the lock on ``out`` (created if missing) while the body runs; only the main process locks.

    If the body fails and the folder did not exist before, it is removed again when it holds nothing but
    the lock file, so a failed first attempt leaves no empty run folder behind.
    """
    if not main_process:
        yield
        return
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create output_dir {out}: {err.strerror}",
                        hint="choose a writable folder: output_dir=...") from None
    lock_file = RunFolder(out).lock
    lock = FileLock(str(lock_file), timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise UserError(f"{out} is being written by another sc2tune train (it holds {lock_file})",
                        hint="wait for that run to finish, or give this one its own folder: "
                        "output_dir=runs/NEW") from None
    ok = False
    try:
        yield
        ok = True
    finally:
        lock.release()
        if not ok and created and [p.name for p in out.iterdir()] == [lock_file.name]:
            shutil.rmtree(out, ignore_errors=True)
