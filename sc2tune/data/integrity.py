"""Trust in the prepared-data cache: who may have written it, and whether its files are the ones written.

*Who.* A folder or file of the cache is trusted when (:func:`untrusted`)

* its owner is the current user or root (a process running as root trusts only root's: a folder another
  user owns is one that user can fill), and
* nobody else can write it: not writable by others, and group-writable only when its group is the
  current user's own primary group (the user-private groups of a ``umask 002`` system); a folder with
  the sticky bit (``/tmp``, mode 1777) is trusted however writable, since nobody can then rename or
  delete what another user put in it.

The cache folder and every folder above it are checked before the cache is read or written
(:func:`check_cache_folder`), and each prepared folder and file before it is used (:func:`check_owned`):
one that fails is **refused** with an error naming it, its owner and mode, and what to do - never
read, never overwritten (a shared cache is a folder with the sticky bit, each user then trusting only
the entries they own, kept in their own sub-folder: :func:`sc2tune.data.store.own_part`). On a platform without POSIX owners (Windows: no ``os.geteuid``, ``st_uid`` always
0) there is nothing to check and every path is trusted; the checksums below still apply.

*What.* Every prepared Arrow file gets two checksums when written (:func:`file_sums`):

    sha256 = sha256(every byte)
    ends   = sha256(size, the first and the last :data:`ENDS_BYTES` bytes)

The head of an Arrow stream holds its schema, the tail its last record batch and end-of-stream marker,
so ``ends`` catches a truncated, extended, re-written or swapped file in about a millisecond; ``sha256``
also catches a same-size edit in the middle and costs a read of the whole file (``bench/data_scale.py``:
0.1 s against 2.5 s for the 410 MB of rows of 4 copies of the standard library). ``data.cache_check: stat``
(default) verifies size and ``ends`` on every use, ``content`` the full ``sha256``. A folder's
``meta.json`` carries ``checksum`` = sha256 of its own canonical JSON without that field
(:func:`seal`, checked on every read), and a run's ``data.json`` records it: a resumed run whose prepared
folder no longer carries that checksum is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from sc2tune.errors import DataError

#: Bytes of each end of a file that the cheap checksum reads.
ENDS_BYTES = 64 * 1024


def untrusted(path: Path) -> str | None:
    """Why ``path`` (folder or file) is not trusted (module doc), or None when it is (or does not exist)."""
    if not hasattr(os, "geteuid"):  # no POSIX owners (module doc)
        return None
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    uid = os.geteuid()
    if st.st_uid not in {uid, 0}:
        return f"owned by uid {st.st_uid}, not by this user (uid {uid})" + (" or root" if uid else "")
    sticky = stat.S_ISDIR(st.st_mode) and bool(st.st_mode & stat.S_ISVTX)
    mode = f"mode {stat.S_IMODE(st.st_mode):o}"
    if st.st_mode & stat.S_IWOTH and not sticky:
        return f"writable by every user ({mode}) without the sticky bit"
    if st.st_mode & stat.S_IWGRP and not sticky and st.st_gid != os.getegid():
        return f"writable by group {st.st_gid}, not this user's own group ({mode}) and without the sticky bit"
    return None


def drop_shared_write(path: Path) -> None:
    """Make ``path`` and everything under it writable by its owner alone (``chmod -R go-w``), so what sc2tune
    writes passes its own check whatever the umask and the group a setgid folder hands down."""
    paths = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in paths:
        if not item.is_symlink():
            item.chmod(stat.S_IMODE(item.stat().st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))


def check_cache_folder(root: Path) -> None:
    """Refuse a cache folder that is, or lies under, a folder someone else could write (module doc)."""
    path = Path(os.path.realpath(root.expanduser()))  # links resolved: the folders that really hold it
    for folder in [path, *path.parents]:
        reason = untrusted(folder)
        if reason is not None:
            where = "" if folder == path else f" (it lies under {folder})"
            raise DataError(f"data.cache_dir: the prepared-data cache {root}{where} is not safe to use: "
                            f"{folder} is {reason}",
                            hint="use a folder only you can write (chmod go-w, or chmod +t for a shared one), "
                            "or set data.cache_dir to another folder, or null for a temporary one")


def check_owned(paths: list[Path], folder: Path) -> None:
    """Refuse prepared data whose folder or files someone else owns or can write (module doc)."""
    for path in paths:
        reason = untrusted(path)
        if reason is not None:
            raise DataError(f"{path}: prepared data is {reason}; it is not used",
                            hint=f"delete {folder} (as its owner) to have it rebuilt, or set data.cache_dir "
                            "to a folder of your own")


def _ends(path: Path, size: int) -> str:
    digest = hashlib.sha256(str(size).encode() + b"\0")
    with open(path, "rb") as fh:
        digest.update(fh.read(ENDS_BYTES))
        if size > ENDS_BYTES:
            fh.seek(max(ENDS_BYTES, size - ENDS_BYTES))
            digest.update(fh.read(ENDS_BYTES))
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read a MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sums(path: Path) -> dict[str, Any]:
    """{size, ends, sha256} of a file just written (module doc)."""
    size = path.stat().st_size
    return {"size": size, "ends": _ends(path, size), "sha256": sha256_file(path)}


def verify_file(path: Path, sums: dict[str, Any], *, full: bool) -> str | None:
    """Why ``path`` is not the file ``sums`` describe (size + ends, or with ``full`` every byte), or None."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if size != sums["size"]:
        return f"has {size} bytes, {sums['size']} were written"
    if _ends(path, size) != sums["ends"]:
        return "differs from what was written (its first or last bytes)"
    if full and sha256_file(path) != sums["sha256"]:
        return "differs from what was written (sha256)"
    return None


def _digest(meta: dict[str, Any]) -> str:
    body = {k: v for k, v in meta.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def seal(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its ``checksum`` (module doc)."""
    return {**meta, "checksum": _digest(meta)}


def check_sealed(meta: dict[str, Any], where: Path) -> None:
    """Refuse a meta.json whose checksum is missing or does not match its content."""
    if meta.get("checksum") != _digest(meta):
        raise DataError(f"{where}: prepared data whose meta.json was changed after it was written "
                        "(its checksum does not match); it is not used",
                        hint=f"delete {where.parent} to have it rebuilt")
