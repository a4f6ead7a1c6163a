"""Read records from the sources a recipe names: files, globs, save_to_disk folders, hub datasets.

``data.train`` / ``data.eval`` entries are, in order of precedence:

* ``hub:OWNER/NAME[:SPLIT][@REVISION]`` -> ``datasets.load_dataset`` (split ``train``, revision ``main`` by
  default; a branch, tag or commit after ``@``);
* a glob (``data/*.jsonl``) -> every matching file, sorted;
* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
* a folder of code (task fim; read by :mod:`sc2tune.data.code_folder`);
* a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file (a ``.json`` file holds an array of records, an
  object holding one, or JSON lines: :mod:`sc2tune.data.json_file`).

Relative paths are resolved against the current working directory. Columns are renamed with
``data.column_map`` ({source: target}) before validation. Every record is checked at the edge: a
malformed JSON line, a record without a needed field, a non-text value in a text field or a source
with no records is a :class:`~sc2tune.errors.DataError` naming the file and line (or row).
"""

from __future__ import annotations

import csv
import glob
import json
from codecs import BOM_UTF8
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sc2tune.data.json_file import iter_json, json_layout, record_too_large
from sc2tune.errors import DataError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
#: Records per chunk of :func:`iter_records`.
CHUNK_RECORDS = 4096
#: Rows per batch read from a parquet file or a ``datasets`` dataset.
BATCH_ROWS = 1024


@dataclass(frozen=True)
class Source:
    """One resolved data source."""

    kind: str  # file | disk | code | hub
    path: str  # absolute path, or hub id
    fmt: str | None = None  # jsonl | json | csv | parquet (kind file)
    split: str | None = None  # hub split
    revision: str | None = None  # hub revision (branch, tag or commit; None: main)


def resolve_sources(value: str | list[str], key: str) -> list[Source]:
    """Turn a ``data.train``/``data.eval`` value into sources (see module doc)."""
    out: list[Source] = []
    for entry in [value] if isinstance(value, str) else value:
        if entry.startswith("hub:"):
            body, _, revision = entry[4:].partition("@")
            name, _, split = body.partition(":")
            if not name:
                raise DataError(f"{key}: '{entry}' has no dataset id", hint="write hub:OWNER/NAME[:SPLIT][@REVISION]")
            out.append(Source("hub", name, split=split or None, revision=revision or None))
            continue
        if any(ch in entry for ch in "*?["):
            matches = sorted(p for p in glob.glob(entry, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{key}: no file matches '{entry}' (searched from {Path.cwd()})",
                                hint="relative paths are resolved against the current directory")
            out.extend(_file_source(Path(m), key) for m in matches)
            continue
        path = Path(entry)
        if not path.exists():
            raise DataError(f"{key}: '{entry}' not found (tried {path.resolve()})",
                            hint="relative paths are resolved against the current directory; "
                            "hub datasets are written hub:OWNER/NAME")
        if path.is_dir():
            disk = any((path / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json"))
            out.append(Source("disk" if disk else "code", str(path.resolve())))
        else:
            out.append(_file_source(path, key))
    return out


def _file_source(path: Path, key: str) -> Source:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{key}: {path}: unsupported file type '{path.suffix}'",
                        hint="use .jsonl, .json, .csv or .parquet (or a folder of code for task fim)")
    if not path.is_file():  # a FIFO, socket or device (a symlink is followed): opening it may block for ever
        raise DataError(f"{key}: {path} is not a regular file (a FIFO, socket or device), so it is not read",
                        hint="give a regular .jsonl, .json, .csv or .parquet file")
    return Source("file", str(path.resolve()), fmt)


# ---- records ----------------------------------------------------------------------------------------

@dataclass
class Records:
    """Columns of validated records plus where each came from (for error messages)."""

    columns: dict[str, list[Any]]
    origin: list[int] = field(default_factory=list)  # index into sources, per record
    position: list[int] = field(default_factory=list)  # line, record or row number, per record
    sources: list[tuple[str, str]] = field(default_factory=list)  # (path, unit)

    def __len__(self) -> int:
        return len(self.origin)

    def where(self, index: int) -> str:
        """'file:line' (or 'file row N') of record ``index``."""
        name, unit = self.sources[self.origin[index]]
        pos = self.position[index]
        return f"{name}:{pos}" if unit == "line" else f"{name} {unit} {pos}"

    def select(self, indices: Iterable[int]) -> Records:
        """A subset, in the given order (keeps locations)."""
        idx = list(indices)
        return Records({k: [v[i] for i in idx] for k, v in self.columns.items()},
                       [self.origin[i] for i in idx], [self.position[i] for i in idx], list(self.sources))


#: Default of ``data.max_record_bytes``: the largest JSON line, ``.json`` record or CSV row read.
MAX_RECORD_BYTES = 8 << 20


def _sized_lines(path: str, limit: int) -> Iterator[tuple[int, int, str]]:
    """(line number, bytes, text) of each line of a UTF-8 text file, line endings kept, a leading byte order
    mark skipped (Windows editors and Excel write one). Each line is decoded on its own, so a byte that is not
    UTF-8 is named by its line and column, not by an offset into a read buffer. A line longer than ``limit``
    bytes (its ending aside) is a DataError naming it, raised after reading at most ``limit + 2`` of its
    bytes."""
    with open(path, "rb") as fh:
        if fh.read(len(BOM_UTF8)) != BOM_UTF8:
            fh.seek(0)
        for lineno, raw in enumerate(iter(partial(fh.readline, limit + 2), b""), 1):
            if len(raw) > limit and len(raw) - (2 if raw.endswith(b"\r\n") else raw.endswith(b"\n")) > limit:
                raise record_too_large(f"{path}:{lineno}", limit, "a line")
            try:
                yield lineno, len(raw), raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({raw[err.start:err.end]!r}: {err.reason} at "
                                f"column {err.start + 1})", hint="save the file as UTF-8") from None


def _iter_jsonl(path: str, limit: int) -> Iterator[tuple[int, Any]]:
    for lineno, _, line in _sized_lines(path, limit):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: malformed JSON line ({err.msg} at column {err.colno})",
                            hint="each line of a .jsonl file must be one JSON object") from None


def _read_file(src: Source, limit: int) -> tuple[Iterator[tuple[int, Any]], str]:
    """(records as (position, record), unit of the positions: line, record or row) of a file source, read as
    they are consumed (a .json array a record at a time: :mod:`sc2tune.data.json_file`); a JSON line, .json
    record or CSV row larger than ``limit`` bytes is a DataError naming it."""
    if src.fmt == "json":
        layout, start = json_layout(src.path)
        if layout != "lines":  # "lines", what json.loads calls "Extra data" (one object per line), reads as .jsonl
            return _guarded(src, iter_json(src.path, layout, start, limit)), "record"
    return _guarded(src, _file_rows(src, limit)), "row" if src.fmt == "parquet" else "line"


def _guarded(src: Source, rows: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """``rows`` with reading errors turned into :class:`DataError` naming the file."""
    try:
        yield from rows
    except UnicodeDecodeError as err:
        raise DataError(f"{src.path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except (OSError, ValueError, ImportError) as err:  # pyarrow errors are ValueErrors
        raise DataError(f"{src.path}: cannot read ({err})") from None


def _file_rows(src: Source, limit: int) -> Iterator[tuple[int, Any]]:
    if src.fmt == "csv":
        yield from _csv_rows(src.path, limit)
    elif src.fmt == "parquet":  # a row group batch at a time
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(src.path).iter_batches(batch_size=BATCH_ROWS)
        yield from enumerate(rec for batch in batches for rec in batch.to_pylist())
    else:  # .jsonl, or a .json file of JSON lines
        yield from _iter_jsonl(src.path, limit)


def _csv_rows(path: str, limit: int) -> Iterator[tuple[int, Any]]:
    """(line, row) of a CSV file with a header; a row (a quoted field may span lines) of more than ``limit``
    bytes is a DataError naming the line it starts on, raised once that much is read. The csv module's own
    field limit (128 KiB by default, process-wide) is raised to ``limit`` while the file is read."""
    row_bytes, row_start = 0, 1

    def lines() -> Iterator[str]:
        nonlocal row_bytes, row_start
        for lineno, size, text in _sized_lines(path, limit):
            if row_bytes == 0:
                row_start = lineno
            row_bytes += size
            if row_bytes > limit + 2:  # the row's bytes, its final line ending aside
                raise record_too_large(f"{path}:{row_start}", limit, "a CSV row")
            yield text

    reader = csv.DictReader(lines(), strict=True)
    field_limit = csv.field_size_limit()
    try:
        csv.field_size_limit(max(field_limit, limit))
        _ = reader.fieldnames  # the header, not counted in the first row
        row_bytes = 0
        for row in reader:
            row_bytes = 0
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more values than header columns")
            if None in row.values():
                raise DataError(f"{path}:{reader.line_num}: fewer values than header columns "
                                f"({', '.join(k for k, v in row.items() if v is None)} missing)")
            yield reader.line_num, row
    except csv.Error as err:
        unclosed = "end of data" in str(err)
        raise DataError(
            f"{path}:{reader.line_num + 1}: "
            + ("a quoted field opened here (or below) is never closed" if unclosed
               else f"malformed CSV ({err})"),
            hint='close the quote; a quote inside a quoted field is written twice ("")') from None
    finally:
        csv.field_size_limit(field_limit)


def _read_datasets(src: Source, key: str) -> Iterator[tuple[int, Any]]:
    """(row number, record) of a save_to_disk folder or hub dataset, a batch at a time (memory-mapped)."""
    import datasets

    try:
        if src.kind == "disk":
            ds = datasets.load_from_disk(src.path)
        else:
            ds = datasets.load_dataset(src.path, split=src.split or "train", revision=src.revision)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        raise DataError(f"{key}: cannot load {src.kind} dataset '{src.path}': {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        wanted = ["train"] if key.endswith("train") else ["validation", "eval", "test"]
        name = next((s for s in wanted if s in ds), None)
        if name is None:
            raise DataError(f"{key}: {src.path} has splits {list(ds)} but none of {wanted}")
        ds = ds[name]
    yield from enumerate(dict(zip(batch, values, strict=True)) for batch in ds.iter(batch_size=BATCH_ROWS)
                         for values in zip(*batch.values(), strict=True))


def iter_records(value: str | list[str], key: str, *, required: Sequence[str], optional: Sequence[str] = (),
                 text_fields: Sequence[str] = (), column_map: dict[str, str] | None = None,
                 purpose: str = "this task", chunk: int | None = None,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> Iterator[Records]:
    """The records of every source of ``value`` in order, ``chunk`` at a time (default :data:`CHUNK_RECORDS`),
    each checked: it has the ``required`` fields (non-null), its ``text_fields`` are strings (columns renamed by
    ``column_map`` first, only ``required + optional`` kept). Sources are read as the chunks are consumed: at
    most one chunk of records (and one parquet/dataset batch) is held at a time.
    Every chunk's ``sources`` is the one list of the sources read so far. A JSON line, ``.json`` record or
    CSV row larger than ``max_record_bytes`` (``data.max_record_bytes``) is a DataError naming it, raised
    while it is read (Parquet files and datasets are columnar and memory-mapped: not bounded here)."""
    chunk = CHUNK_RECORDS if chunk is None else chunk
    keep = list(dict.fromkeys([*required, *optional]))
    sources: list[tuple[str, str]] = []

    def empty() -> Records:
        return Records({k: [] for k in keep}, sources=sources)

    records = empty()
    for src in resolve_sources(value, key):
        if src.kind == "code":
            raise DataError(f"{key}: {src.path} is a folder of code, which only task fim reads",
                            hint="give a .jsonl/.json/.csv/.parquet file, a glob, or a save_to_disk folder")
        if src.kind == "file":
            rows, unit = _read_file(src, max_record_bytes)
        else:
            rows, unit = _read_datasets(src, key), "row"
        sources.append((src.path, unit))
        src_index = len(sources) - 1
        seen = 0
        for where, rec in rows:
            seen += 1
            loc = f"{src.path}:{where}" if unit == "line" else f"{src.path} {unit} {where}"
            if not isinstance(rec, dict):
                raise DataError(f"{loc}: expected a JSON object (a record), got {type(rec).__name__}")
            if column_map:
                rec = {column_map.get(k, k): v for k, v in rec.items()}
            missing = [f for f in required if rec.get(f) is None]
            if missing:
                raise DataError(
                    f"{loc}: record is missing (or has null) field(s) {', '.join(repr(m) for m in missing)} "
                    f"needed by {purpose} "
                    f"(needs {', '.join(required)}" + (f"; optional {', '.join(optional)}" if optional else "")
                    + f"); the record has {', '.join(map(repr, rec)) or 'no fields'}",
                    hint="rename columns with data.column_map: {source_name: target_name}")
            for f in text_fields:
                v = rec.get(f)
                if v is not None and not isinstance(v, str):
                    raise DataError(f"{loc}: field '{f}' must be text, got {type(v).__name__} ({str(v)[:40]!r})")
            for k in keep:
                records.columns[k].append(rec.get(k))
            records.origin.append(src_index)
            records.position.append(where)
            if len(records) >= chunk:
                yield records
                records = empty()
        if not seen:
            raise DataError(f"{src.path}: no records", hint=f"{key} must point at data with at least one record")
    if len(records):
        yield records

