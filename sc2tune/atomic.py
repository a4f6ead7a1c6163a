"""Atomic writes: a file or a folder is written under a hidden sibling name and renamed into place whole.

Every writer of the package publishes through this module (it holds the package's only renames)::

    PARENT/.NAME.tmp-HOST-PID     1. staged: a hidden sibling of NAME (same file system, so the rename is atomic)
                                  2. written by the caller
                                  3. flushed: ``fsync`` of every file in it, then of every folder (bottom-up)
    PARENT/NAME                   4. renamed into place (``os.replace``), then ``fsync(PARENT)``, so the new
                                     name survives a power cut as well as a kill

A reader therefore sees the old ``NAME`` (or none) until step 4 and the complete new one after it, never a
half-written one. On an error (or ``KeyboardInterrupt``) the staging is removed and ``NAME`` is untouched. A
kill leaves only the hidden staging; the next write of ``NAME`` on the same host removes the stagings whose
process (``PID``) is gone (:func:`clear_leftovers`), and leaves a live writer's alone.

Replacing an existing folder ``NAME`` (``os.replace`` cannot put a folder onto a non-empty one): the old one is
renamed aside (``.NAME.old-HOST-PID``), the new one takes ``NAME``, the old one is
deleted. A kill between the two renames leaves ``NAME`` missing and the old folder set aside, never a mixture.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

STAGED = "tmp"  # the tag of a staging sibling: .NAME.tmp-HOST-PID
ASIDE = "old"  # the tag of a replaced folder set aside: .NAME.old-HOST-PID


def sibling(target: Path, tag: str = STAGED) -> Path:
    """``PARENT/.NAME.TAG-HOST-PID``: this process's hidden sibling of ``target`` (not created)."""
    return target.with_name(f".{target.name}.{tag}-{socket.gethostname()}-{os.getpid()}")


def alive(pid: int) -> bool:
    """Whether process ``pid`` of this host may still run: signal 0 on POSIX, where an error other than "no such
    process" (another user's process) counts as alive; elsewhere, where ``os.kill`` would end the process, it is
    assumed alive (its leftovers are kept). The one liveness probe of every leftover clean-up."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clear_leftovers(target: Path, tag: str = STAGED) -> list[Path]:
    """Remove the siblings ``.NAME.TAG-HOST-PID`` of ``target`` that a process of this host left when it was
    killed (its ``PID`` no longer runs); a live writer's, or another host's, are kept. Returns those removed."""
    parent, host = target.parent, socket.gethostname()
    prefix = f".{target.name}.{tag}-{host}-"
    removed = []
    with contextlib.suppress(OSError):
        for stale in parent.iterdir():
            pid = stale.name[len(prefix):] if stale.name.startswith(prefix) else ""
            if not pid.isdigit() or int(pid) == os.getpid() or alive(int(pid)):
                continue
            remove(stale)
            removed.append(stale)
    return removed


def remove(path: Path) -> None:
    """Delete a file or folder if it is there (a symlink itself, never what it points to)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def fsync_tree(path: Path) -> None:
    """Flush ``path`` to disk: a file's data, or every regular file under a folder and then every folder,
    deepest first (so each folder's entries are durable once its files are). Symlinks are not followed."""
    if path.is_symlink():
        return
    if not path.is_dir():
        _fsync(path, os.O_RDONLY)
        return
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            file = Path(root) / name
            if not file.is_symlink() and file.is_file():
                _fsync(file, os.O_RDONLY)
        for name in dirs:
            if not (Path(root) / name).is_symlink():
                _fsync(Path(root) / name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    _fsync(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync a folder (some network ones): the rename is still atomic
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (``os.replace``: a file replaces a file; a folder takes a missing or empty
    ``dst``, else OSError), then flush ``dst``'s parent folder (and ``src``'s when it differs), so the rename is
    durable. Nothing is flushed inside ``src``: :func:`publish` does that first."""
    os.replace(src, dst)
    for parent in {Path(dst).parent, Path(src).parent}:
        with contextlib.suppress(FileNotFoundError):
            _fsync(parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def publish(staging: Path, target: Path, *, replace: bool = False) -> None:
    """Flush the complete ``staging`` (a file or a folder) and rename it to ``target``.

    A file always replaces a file ``target``. A folder takes a missing (or empty) ``target``; an existing one is
    replaced only with ``replace``: it is renamed aside (``.NAME.old-HOST-PID``), ``staging`` is renamed to
    ``target``, then the old one is deleted; if the second rename fails, the old one is put back.
    Without ``replace``, an existing non-empty folder ``target`` is an OSError and ``staging`` is left as it is
    (the caller decides what to do with it)."""
    fsync_tree(staging)
    if not (replace and staging.is_dir() and target.exists() and not _empty_dir(target)):
        move(staging, target)
        return
    aside = sibling(target, ASIDE)
    remove(aside)
    move(target, aside)
    try:
        move(staging, target)
    except BaseException:
        move(aside, target)
        raise
    remove(aside)


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


@contextlib.contextmanager
def staged_file(target: Path) -> Iterator[Path]:
    """A path to write ``target``'s new content to (``.NAME.tmp-HOST-PID``); when the block ends without an
    error it is flushed and renamed to ``target``, else deleted (``target`` is untouched either way until then).
    A killed writer's leftover beside ``target`` is removed first (:func:`clear_leftovers`)."""
    target = Path(target)
    clear_leftovers(target)
    staging = sibling(target)
    remove(staging)
    try:
        yield staging
        publish(staging, target)
    finally:
        remove(staging)


def write_file(target: Path, data: str | bytes, *, encoding: str = "utf-8") -> None:
    """Write ``target`` atomically (:func:`staged_file`) with ``data`` (text in ``encoding``, or bytes); the
    file gets the mode a new file gets (``0o666`` less the umask)."""
    with staged_file(Path(target)) as staging:
        if isinstance(data, str):
            staging.write_text(data, encoding=encoding)
        else:
            staging.write_bytes(data)


@contextlib.contextmanager
def staged_dir(target: Path, *, replace: bool = False) -> Iterator[Path]:
    """A new, empty folder to build ``target`` in (``.NAME.tmp-HOST-PID``, created with the mode a new folder
    gets); when the block ends without an error it is published (:func:`publish`, with ``replace``), else
    removed. A killed writer's leftover beside ``target`` is removed first (:func:`clear_leftovers`), and so is
    a leftover at the staging name itself."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(target)
    staging = sibling(target)
    remove(staging)
    staging.mkdir()
    try:
        yield staging
        publish(staging, target, replace=replace)
    finally:
        remove(staging)
