"""Read records from the sources a recipe names: files, globs, save_to_disk folders, hub datasets.

``data.train`` / ``data.eval`` entries are, in order of precedence:

* ``hub:OWNER/NAME`` or ``hub:OWNER/NAME:SPLIT`` -> ``datasets.load_dataset`` (split ``train`` by default);
* a glob (``data/*.jsonl``) -> every matching file, sorted;
* a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
* a folder of code (task fim; read by :mod:`sc2tune.data.code_folder`);
* a ``.jsonl``, ``.json``, ``.csv`` or ``.parquet`` file.

Relative paths are resolved against the current working directory. Columns are renamed with
``data.column_map`` ({source: target}) before validation. Every record is checked at the edge: a
malformed JSON line, a record without a needed field, a non-text value in a text field or a source
with no records is a :class:`~sc2tune.errors.DataError` naming the file and line (or row).
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sc2tune.errors import DataError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Source:
    """One resolved data source."""

    kind: str  # file | disk | code | hub
    path: str  # absolute path, or hub id
    fmt: str | None = None  # jsonl | json | csv | parquet (kind file)
    split: str | None = None  # hub split


def _entries(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def resolve_sources(value: str | list[str], key: str) -> list[Source]:
    """Turn a ``data.train``/``data.eval`` value into sources (see module doc)."""
    out: list[Source] = []
    for entry in _entries(value):
        if entry.startswith("hub:"):
            name, _, split = entry[4:].partition(":")
            if not name:
                raise DataError(f"{key}: '{entry}' has no dataset id", hint="write hub:OWNER/NAME[:SPLIT]")
            out.append(Source("hub", name, split=split or None))
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


def _iter_jsonl(path: str) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: malformed JSON line ({err.msg} at column {err.colno})",
                                hint="each line of a .jsonl file must be one JSON object") from None


def _read_file(src: Source) -> tuple[list[tuple[int, Any]], str]:
    """(list of (line or row number, record), unit) for a file source."""
    try:
        if src.fmt == "jsonl":
            return list(_iter_jsonl(src.path)), "line"
        if src.fmt == "json":
            text = Path(src.path).read_text(encoding="utf-8")
            try:
                data = json.loads(text)
            except json.JSONDecodeError as err:
                if err.msg == "Extra data":  # JSON lines in a .json file
                    return list(_iter_jsonl(src.path)), "line"
                raise DataError(f"{src.path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise DataError(f"{src.path}: expected a list of records (or an object holding one list)")
                data = lists[0]
            if not isinstance(data, list):
                raise DataError(f"{src.path}: expected a list of records")
            return list(enumerate(data)), "record"
        if src.fmt == "csv":
            with open(src.path, encoding="utf-8", newline="") as fh:
                reader = csv.DictReader(fh, strict=True)
                rows = []
                try:
                    for row in reader:
                        if None in row:
                            raise DataError(f"{src.path}:{reader.line_num}: more values than header columns")
                        if None in row.values():
                            raise DataError(f"{src.path}:{reader.line_num}: fewer values than header columns "
                                            f"({', '.join(k for k, v in row.items() if v is None)} missing)")
                        rows.append((reader.line_num, row))
                except csv.Error as err:
                    unclosed = "end of data" in str(err)
                    raise DataError(
                        f"{src.path}:{reader.line_num + 1}: "
                        + ("a quoted field opened here (or below) is never closed" if unclosed
                           else f"malformed CSV ({err})"),
                        hint='close the quote; a quote inside a quoted field is written twice ("")') from None
                return rows, "line"
        if src.fmt == "parquet":
            import pyarrow.parquet as pq

            return list(enumerate(pq.read_table(src.path).to_pylist())), "row"
    except UnicodeDecodeError as err:
        raise DataError(f"{src.path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{src.path}: cannot read ({err})") from None
    except (ValueError, ImportError) as err:  # pyarrow errors are ValueErrors
        raise DataError(f"{src.path}: cannot read ({err})") from None
    raise DataError(f"{src.path}: unsupported format {src.fmt}")


def _read_datasets(src: Source, key: str) -> list[tuple[int, Any]]:
    import datasets

    try:
        if src.kind == "disk":
            ds = datasets.load_from_disk(src.path)
        else:
            ds = datasets.load_dataset(src.path, split=src.split or "train")
    except Exception as err:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        raise DataError(f"{key}: cannot load {src.kind} dataset '{src.path}': {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        wanted = ["train"] if key.endswith("train") else ["validation", "eval", "test"]
        name = next((s for s in wanted if s in ds), None)
        if name is None:
            raise DataError(f"{key}: {src.path} has splits {list(ds)} but none of {wanted}")
        ds = ds[name]
    return list(enumerate(ds.to_list()))


def load_records(value: str | list[str], key: str, *, required: Sequence[str], optional: Sequence[str] = (),
                 text_fields: Sequence[str] = (), column_map: dict[str, str] | None = None,
                 purpose: str = "this task") -> Records:
    """Read every source of ``value``, rename columns, and check each record has ``required`` fields
    (non-null) and that ``text_fields`` are strings. Keeps only ``required + optional`` columns."""
    column_map = column_map or {}
    keep = list(dict.fromkeys([*required, *optional]))
    records = Records({k: [] for k in keep})
    for src in resolve_sources(value, key):
        if src.kind == "code":
            raise DataError(f"{key}: {src.path} is a folder of code, which only task fim reads",
                            hint="give a .jsonl/.json/.csv/.parquet file, a glob, or a save_to_disk folder")
        if src.kind == "file":
            rows, unit = _read_file(src)
        else:
            rows, unit = _read_datasets(src, key), "row"
        name = src.path
        if not rows:
            raise DataError(f"{name}: no records", hint=f"{key} must point at data with at least one record")
        records.sources.append((name, unit))
        src_index = len(records.sources) - 1
        for where, rec in rows:
            loc = f"{name}:{where}" if unit == "line" else f"{name} {unit} {where}"
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
    return records
