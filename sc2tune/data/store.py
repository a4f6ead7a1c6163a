"""Prepared data on disk: one folder per content key, written atomically, built by one process at a time.

Layout under the cache folder (``data.cache_dir``; in a shared one, ``user-UID/`` of it: :func:`own_part`;
with ``data.cache_dir: null`` a temporary folder of this process alone: :func:`temporary_root`)::

    KEY/                        a complete prepared folder (only ever renamed into place whole)
        meta.json               task, statistics, label names, the key's inputs, the parts of each split,
                                the checksums of every file, its own checksum (written last)
        train/00000.arrow ...   instruct / classify rows, as Arrow stream files written by ``datasets``'
        eval/00000.arrow ...    ArrowWriter, read back memory-mapped (``Dataset.from_file``)
    KEY.lock                    file lock held by the process building KEY
    KEY.lock.holder             who holds it: {"pid", "host", "since"} (named by a waiter that gives up)
    .KEY.tmp-HOST-PID/          a build in progress (:func:`sc2tune.atomic.staged_dir`): never read; a killed
                                build's leftover is removed by the next builder of KEY
    chunks/CKEY/                task fim: the rows of one chunk of files (:mod:`sc2tune.data.chunked`),
        meta.json               keyed by that chunk's files alone, shared by every KEY whose corpus holds
        rows.arrow              that chunk; renamed into place whole like KEY/
    chunks/.CKEY.tmp-HOST-PID/  a chunk being written

``meta.json`` lists the parts of each split as paths relative to the cache folder (``KEY/train/00000.arrow``
or ``chunks/CKEY/rows.arrow``), concatenated in that order, with their checksums
(:mod:`sc2tune.data.integrity`). A reader takes ``KEY/`` only when ``KEY/meta.json`` exists, and the
folder gets its name only after every file in it is complete and flushed (:func:`sc2tune.atomic.publish` of
the staging folder), so a build killed at any moment leaves nothing a later run would use (chunks completed
before the kill are whole, and reused). Builders of one key take ``KEY.lock`` in turn: the first builds, the others wait (at
most ``data.cache_lock_timeout`` seconds, then an error naming the holder), then find the folder and
read it; across processes, ranks and (on a shared file system) nodes, a key is built once.

Before it is used, a prepared folder, its ``meta.json`` and every part are checked: owned by this user
(or root) and writable by nobody else, ``meta.json``'s own checksum, and each part's checksum (size and
ends, or every byte with ``data.cache_check: content``); anything else is refused, naming the file.
Nothing is ever garbage-collected: delete the cache folder (or old ``KEY/`` and ``chunks/``) to free space.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.atomic import alive, staged_dir, write_file
from sc2tune.data.integrity import (
    check_cache_folder,
    check_owned,
    check_sealed,
    drop_shared_write,
    file_sums,
    seal,
    verify_file,
)
from sc2tune.data.stats import DataStats, SplitStats
from sc2tune.errors import DataError

if TYPE_CHECKING:  # datasets and pyarrow are imported where rows are read or written, not for a lookup
    import datasets
    import pyarrow as pa

log = logging.getLogger(__name__)

META = "meta.json"
SPLITS = ("train", "eval")
CHUNKS = "chunks"
ROWS = "rows.arrow"
#: Name prefix of the temporary cache folders of ``data.cache_dir: null`` (:func:`temporary_root`).
TEMPORARY = "sc2tune-data-"


def cache_root(spec: str) -> Path:
    """The cache folder of ``data.cache_dir``: ``auto`` = ``<sc2tune cache>/data`` (``$SC2TUNE_CACHE``
    or ``~/.cache/sc2tune``, the folder the built-in model is kept in), else the path given; in a shared
    folder, this user's own sub-folder of it (:func:`own_part`)."""
    if spec == "auto":
        from sc2tune.tiny import cache_dir  # light: tiny imports torch only inside its builders

        return own_part(cache_dir() / "data")
    return own_part(Path(spec).expanduser())


def own_part(root: Path) -> Path:
    """``root/user-UID`` when ``root`` is a shared folder (sticky bit, writable by group or others: ``chmod
    1777``), else ``root``. Each user trusts only the entries they own (:mod:`sc2tune.data.integrity`), so in
    one shared folder a key another user built first (and its lock file, which they own) would stop this
    user's run; in their own sub-folder each user builds and reads their own entries."""
    try:
        st = root.stat()
    except OSError:
        return root
    shared = st.st_mode & stat.S_ISVTX and st.st_mode & (stat.S_IWOTH | stat.S_IWGRP)
    if not shared or not hasattr(os, "geteuid"):
        return root
    return root / f"user-{os.geteuid()}"


def is_complete(folder: Path) -> bool:
    """A prepared folder a reader may use."""
    return (folder / META).is_file()


@contextlib.contextmanager
def arrow_writer(path: Path) -> Iterator[Callable[[pa.Table], None]]:
    """The Arrow stream file ``path`` (a split's part, a chunk's rows), written table by table (same columns)."""
    from datasets.arrow_writer import ArrowWriter

    path.parent.mkdir(parents=True, exist_ok=True)
    with ArrowWriter(path=str(path)) as writer:
        yield writer.write_table
        writer.finalize()


def open_split(folder: Path, split: str, meta: dict[str, Any]) -> datasets.Dataset | None:
    """The memory-mapped rows of ``split`` of the prepared folder ``folder`` (None when it has none)."""
    import datasets

    parts = meta["parts"].get(split) or []
    if not parts:
        return None
    tables = [datasets.Dataset.from_file(str(folder.parent / rel)) for rel in parts]
    return tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)


def read_meta(folder: Path) -> dict[str, Any]:
    """meta.json of a prepared folder (or chunk), its own checksum checked."""
    try:
        meta = json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: not UTF-8, or not JSON
        raise DataError(f"{folder / META}: unreadable prepared data ({err})",
                        hint=f"delete {folder} to have it rebuilt") from None
    if not isinstance(meta, dict):
        raise DataError(f"{folder / META}: unreadable prepared data (not a JSON object)",
                        hint=f"delete {folder} to have it rebuilt")
    check_sealed(meta, folder / META)
    return meta


def verified_meta(root: Path, folder: Path, *, full: bool) -> dict[str, Any]:
    """meta.json of the prepared folder (or chunk) ``folder`` of cache ``root`` after every check of the module
    doc: owner and mode of the folder, meta.json and each file, meta.json's checksum, each part listed with a
    checksum and inside ``root``, each file's checksum."""
    check_owned([folder, folder / META], folder)
    meta = read_meta(folder)
    files = meta.get("files")
    if not isinstance(files, dict):
        raise DataError(f"{folder / META}: prepared data without checksums (written by an older sc2tune?)",
                        hint=f"delete {folder} to have it rebuilt")
    parts = [rel for split in (meta.get("parts") or {}).values() for rel in split]
    bad = [rel for rel in [*files, *parts] if rel not in files or Path(rel).is_absolute() or ".." in Path(rel).parts]
    if bad:
        raise DataError(f"{folder / META}: prepared data naming a part it has no checksum for, or outside the "
                        f"cache folder ({bad[0]}); it is not used", hint=f"delete {folder} to have it rebuilt")
    paths = [root / rel for rel in files]
    check_owned(paths, folder)
    for path, sums in zip(paths, files.values(), strict=True):
        problem = verify_file(path, sums, full=full)
        if problem is not None:
            raise DataError(f"{path}: prepared data that {problem}; it is not used",
                            hint=f"delete {folder} to have it rebuilt")
    return meta


def read_stats(meta: dict[str, Any]) -> tuple[DataStats, dict[int, str] | None]:
    """The statistics (as ``DataStats.to_dict`` wrote them) and the label names (classify) of a prepared meta."""
    values = dict(meta["stats"])
    split = values.pop("eval", None)
    id2label = {int(k): v for k, v in meta["id2label"].items()} if meta.get("id2label") else None
    return DataStats(**values, eval=SplitStats(**split) if split is not None else None), id2label


def _owner_gone(tag: str) -> bool:
    """Whether ``tag`` = ``HOST-PID`` names a process of this host that has ended."""
    host, _, pid = tag.rpartition("-")
    return host == socket.gethostname() and pid.isdigit() and not alive(int(pid))


def clear_chunk_leftovers(root: Path) -> None:
    """Remove the chunk staging folders of builds on this host whose process is gone."""
    for stale in (root / CHUNKS).glob(".*.tmp-*"):
        if _owner_gone(stale.name.rsplit(".tmp-", 1)[1]):
            log.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)


def temporary_root() -> Path:
    """The cache folder of ``data.cache_dir: null``: a fresh private folder (mode 0700) in the system's
    temporary folder, ``sc2tune-data-HOST-PID-XXXXXXXX``, removed when this process exits (``atexit``; the
    rows are memory-mapped from it until then). Each process gets its own (the ranks of a launch each
    prepare theirs), and one left by a killed process of this host is removed by the next one made."""
    base = Path(tempfile.gettempdir())
    for stale in base.glob(f"{TEMPORARY}*"):
        with contextlib.suppress(OSError):
            if stale.lstat().st_uid == os.geteuid() and _owner_gone(stale.name[len(TEMPORARY):].rpartition("-")[0]):
                log.info("removing %s, left by a process that was killed", stale)
                shutil.rmtree(stale, ignore_errors=True)  # a link is refused, not followed
    root = Path(tempfile.mkdtemp(prefix=f"{TEMPORARY}{socket.gethostname()}-{os.getpid()}-", dir=base))
    atexit.register(_remove_own, root, os.getpid())
    return root


def _remove_own(root: Path, pid: int) -> None:
    if os.getpid() == pid:  # not in a forked child that inherited the handler
        shutil.rmtree(root, ignore_errors=True)


def _holder(path: Path) -> str:
    """Who holds a lock, from its sidecar (module doc)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"process {int(info['pid'])} on host {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it did not say which)"


def _seal_entry(staging: Path, key: str, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the parts and checksums of the Arrow files in ``staging`` (paths as they will be once
    ``staging`` is renamed ``key``) added to those the builder listed, then sealed."""
    parts = {split: list(v) for split, v in (meta.get("parts") or {}).items()}
    files = dict(meta.get("files") or {})
    for split in SPLITS:
        for path in sorted((staging / split).glob("*.arrow")):
            rel = f"{key}/{split}/{path.name}"
            parts.setdefault(split, []).append(rel)
            files[rel] = file_sums(path)
    return seal({**meta, "parts": parts, "files": files})


def build_once(root: Path, key: str, build: Callable[[Path], dict[str, Any]], *,
               timeout: float | None = None) -> tuple[Path, bool]:
    """(folder of ``key``, whether it was already there). On a miss ``build(staging)`` writes the split
    files into ``staging`` and returns the meta mapping (it may list parts outside ``staging`` under
    ``parts`` and ``files``); the folder is then renamed into place whole. ``root`` is checked first
    (:func:`~sc2tune.data.integrity.check_cache_folder`); the caller verifies what it then reads
    (:func:`verified_meta`). Waits at most ``timeout`` seconds (None: for ever) for another builder."""
    from filelock import FileLock, Timeout

    check_cache_folder(root)
    final = root / key
    if is_complete(final):
        return final, True
    try:
        if not root.is_dir():
            root.mkdir(parents=True)
            drop_shared_write(root)
    except OSError as err:
        if not root.is_dir():  # else made meanwhile by another process
            raise DataError(f"data.cache_dir: cannot create {root} ({err.strerror})",
                            hint="set data.cache_dir to a writable folder, or null for a temporary one") from None
    check_cache_folder(root)
    lock_path = root / f"{key}.lock"
    holder = root / f"{key}.lock.holder"
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("data: %s is preparing %s; waiting for it (at most %s)", _holder(holder), final,
                 "for ever" if timeout is None else f"{timeout:g} s")
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise DataError(f"data.cache_dir: waited {timeout:g} s for {_holder(holder)}, which is preparing "
                            f"{final} (lock {lock_path})",
                            hint="let it finish and run again, or raise data.cache_lock_timeout; if that "
                            f"process is gone (a host sharing the folder died), delete {lock_path}") from None
    try:
        write_file(holder, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                       "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        if is_complete(final):
            return final, True
        for stale in root.glob(f".{key}.tmp-*"):  # we hold the key's lock: any staging of it is a dead build's
            log.info("removing %s, left by an interrupted build", stale)
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():  # a folder without meta.json: not ours to trust
            shutil.rmtree(final)
        with staged_dir(final) as staging:
            meta = _seal_entry(staging, key, build(staging))
            (staging / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            drop_shared_write(staging)
        return final, False
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()


# ---- chunks (task fim) -------------------------------------------------------------------------------

def chunk_rel(ckey: str) -> str:
    """Path of chunk ``ckey``'s rows relative to the cache folder."""
    return f"{CHUNKS}/{ckey}/{ROWS}"


def load_chunk(root: Path, ckey: str, *, full: bool) -> dict[str, Any] | None:
    """The verified meta of chunk ``ckey`` (``counts``, ``files``) when it is in the cache, else None."""
    folder = root / CHUNKS / ckey
    return verified_meta(root, folder, full=full) if is_complete(folder) else None


def put_chunk(root: Path, ckey: str, table: pa.Table, counts: dict[str, int]) -> dict[str, Any]:
    """Write chunk ``ckey`` (rows and sealed meta with its counts and checksums), renamed into place whole;
    when another process got there first, its copy stays and ours is dropped. Returns the meta."""
    chunks = root / CHUNKS
    if not chunks.exists():
        with contextlib.suppress(FileExistsError):
            chunks.mkdir()
            drop_shared_write(chunks)
    final = chunks / ckey
    try:
        with staged_dir(final) as staging:
            with arrow_writer(staging / ROWS) as write:
                write(table)
            meta = seal({"counts": counts, "files": {chunk_rel(ckey): file_sums(staging / ROWS)}})
            (staging / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            drop_shared_write(staging)
            if final.exists() and not is_complete(final):
                shutil.rmtree(final)
    except OSError:
        if not is_complete(final):
            raise
        meta = read_meta(final)  # built meanwhile by another process (its rows are the same): ours is dropped
    return meta
