"""Prepared data on disk: one folder per content key, written atomically, built by one process at a time.

Layout under the cache folder (``data.cache_dir``)::

    KEY/                        a complete prepared folder (only ever renamed into place whole)
        meta.json               task, statistics, label names, the key's inputs (written last)
        train/00000.arrow ...   the rows, as Arrow stream files written by ``datasets``' ArrowWriter,
        eval/00000.arrow ...    read back memory-mapped (``Dataset.from_file``) and concatenated in order
    KEY.lock                    file lock held by the process building KEY
    .KEY.staging-PID/           a build in progress: never read; a killed build's leftover is removed
                                by the next builder of KEY

A reader takes ``KEY/`` only when ``KEY/meta.json`` exists, and the folder gets its name only after
every file in it is complete (``os.replace`` of the staging folder), so a build killed at any moment
leaves nothing a later run would use. Builders of one key take ``KEY.lock`` in turn: the first builds,
the others wait, then find the folder and read it; across processes, ranks and (on a shared file
system) nodes, a key is built once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.data.stats import DataStats, SplitStats
from sc2tune.errors import DataError

if TYPE_CHECKING:  # datasets and pyarrow are imported where rows are read or written, not for a lookup
    import datasets
    import pyarrow as pa

log = logging.getLogger(__name__)

META = "meta.json"
SPLITS = ("train", "eval")


def cache_root(spec: str) -> Path:
    """The cache folder of ``data.cache_dir``: ``auto`` = ``<sc2tune cache>/data`` (``$SC2TUNE_CACHE``
    or ``~/.cache/sc2tune``, the folder the built-in model is kept in), else the path given."""
    if spec == "auto":
        from sc2tune.modeling import cache_dir  # light: modeling imports torch only inside its loaders

        return cache_dir() / "data"
    return Path(spec).expanduser()


def is_complete(folder: Path) -> bool:
    """A prepared folder a reader may use."""
    return (folder / META).is_file()


def write_table(staging: Path, split: str, index: int, table: pa.Table) -> None:
    """Write part ``index`` of ``split`` (one Arrow stream file; parts are read back in index order)."""
    with part_writer(staging, split, index) as write:
        write(table)


@contextlib.contextmanager
def part_writer(staging: Path, split: str, index: int) -> Iterator[Callable[[pa.Table], None]]:
    """Part ``index`` of ``split`` written table by table (same columns each time) as one Arrow stream file."""
    from datasets.arrow_writer import ArrowWriter

    folder = staging / split
    folder.mkdir(parents=True, exist_ok=True)
    with ArrowWriter(path=str(folder / f"{index:05d}.arrow")) as writer:
        yield writer.write_table
        writer.finalize()


def open_split(folder: Path, split: str) -> datasets.Dataset | None:
    """The memory-mapped rows of ``split`` (None when the folder has none)."""
    import datasets

    parts = sorted((folder / split).glob("*.arrow"))
    if not parts:
        return None
    tables = [datasets.Dataset.from_file(str(p)) for p in parts]
    return tables[0] if len(tables) == 1 else datasets.concatenate_datasets(tables)


def read_meta(folder: Path) -> dict[str, Any]:
    """meta.json of a prepared folder."""
    try:
        return json.loads((folder / META).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{folder / META}: unreadable prepared data ({err})",
                        hint=f"delete {folder} to have it rebuilt") from None


def stats_from_dict(values: dict[str, Any]) -> DataStats:
    """The :class:`DataStats` that ``DataStats.to_dict`` wrote."""
    values = dict(values)
    split = values.pop("eval", None)
    stats = DataStats(**values)
    stats.eval = SplitStats(**split) if split is not None else None
    return stats


def _clear_leftovers(root: Path, key: str) -> None:
    for stale in root.glob(f".{key}.staging-*"):
        log.info("removing %s, left by an interrupted build", stale)
        shutil.rmtree(stale, ignore_errors=True)


def build_once(root: Path, key: str, build: Callable[[Path], dict[str, Any]]) -> tuple[Path, bool]:
    """(folder of ``key``, whether it was already there). On a miss ``build(staging)`` writes the split
    files into ``staging`` and returns the meta mapping; the folder is then renamed into place whole."""
    from filelock import FileLock, Timeout

    final = root / key
    if is_complete(final):
        return final, True
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"data.cache_dir: cannot create {root} ({err.strerror})",
                        hint="set data.cache_dir to a writable folder, or null to build in memory") from None
    lock = FileLock(str(root / f"{key}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("data: another process is preparing %s; waiting for it", final)
        lock.acquire()
    try:
        if is_complete(final):
            return final, True
        _clear_leftovers(root, key)
        if final.exists():  # a folder without meta.json: not ours to trust
            shutil.rmtree(final)
        staging = root / f".{key}.staging-{os.getpid()}"
        staging.mkdir()
        try:
            meta = build(staging)
            (staging / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return final, False
    finally:
        lock.release()
