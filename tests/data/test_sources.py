"""Record files (``sc2tune.data.sources``): a UTF-8 byte order mark at the start of a file, which Windows
editors and Excel's "CSV UTF-8" write, is skipped in every text format. Reference: the same records written
without it, read by ``json`` and ``csv`` themselves."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from sc2tune.data import sources
from sc2tune.errors import DataError

BOM = "\ufeff"
RECORDS = [{"instruction": "Sum a list", "output": "sum(xs)"}, {"instruction": "caf\u00e9", "output": "r\u00e9sum\u00e9"}]


def _write(path: Path, text: str, bom: bool) -> Path:
    path.write_text((BOM if bom else "") + text, encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    rows: list[dict] = []
    for part in sources.iter_records(str(path), "data.train", required=["instruction", "output"], chunk=1):
        rows += [dict(zip(part.columns, values, strict=True)) for values in zip(*part.columns.values(), strict=True)]
    return rows


def _csv_text(records: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()


LAYOUTS = {
    "array.json": lambda r: json.dumps(r, indent=1),
    "lines.json": lambda r: "\n".join(json.dumps(x) for x in r),
    "lines.jsonl": lambda r: "\n".join(json.dumps(x) for x in r),
    "table.csv": _csv_text,
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_a_leading_byte_order_mark_is_skipped(tmp_path: Path, name: str):
    text = LAYOUTS[name](RECORDS)
    plain = _read(_write(tmp_path / f"plain-{name}", text, bom=False))
    if name.endswith(".csv"):
        reference = list(csv.DictReader(io.StringIO(text)))
    elif name.startswith("array"):
        reference = json.loads(text)
    else:
        reference = [json.loads(line) for line in text.splitlines()]
    assert plain == reference == RECORDS
    assert _read(_write(tmp_path / f"bom-{name}", text, bom=True)) == reference


def test_a_byte_order_mark_inside_a_file_is_still_data(tmp_path: Path):
    """Only the first bytes of a file are skipped: a BOM character inside a value is kept."""
    path = _write(tmp_path / "inner.jsonl", json.dumps({"instruction": BOM + "x", "output": "y"}, ensure_ascii=False), bom=True)
    assert _read(path) == [{"instruction": BOM + "x", "output": "y"}]


@pytest.mark.parametrize("name", ["lines.jsonl", "table.csv"])
def test_a_byte_that_is_not_utf8_is_named_by_line_and_column(tmp_path: Path, name: str):
    """A Latin-1 'é' (0xE9) deep in a file: the error names the line and column where it is, as found here by
    decoding the file's lines one by one (not an offset into a read buffer, which grew with the file)."""
    records = [{"instruction": f"task {i}", "output": "x" * 50} for i in range(400)]
    data = LAYOUTS[name](records).encode()
    target = data.index(b"task 300")  # a line past the first read buffer
    data = data[:target] + b"caf\xe9 " + data[target:]
    path = tmp_path / name
    path.write_bytes(data)
    bad_line, column = next((n, err.start + 1) for n, line in enumerate(data.splitlines(keepends=True), 1)
                            for err in _decode_errors(line))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:{bad_line}: not UTF-8 text .* at column {column}\)"):
        _read(path)


def _decode_errors(line: bytes) -> list[UnicodeDecodeError]:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as err:
        return [err]
    return []


def test_a_fifo_given_as_a_data_file_is_refused_not_read(tmp_path: Path):
    """Opening a FIFO for reading blocks until a writer comes (the build hung for ever on one): a source that
    is not a regular file, as os.stat tells, is refused by name before anything opens it."""
    import os
    import stat

    fifo = tmp_path / "train.jsonl"
    os.mkfifo(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    with pytest.raises(DataError, match=rf"data.train: {re.escape(str(fifo))} is not a regular file"):
        sources.resolve_sources(str(fifo), "data.train")
    link = tmp_path / "link.jsonl"  # a symlink to a regular file is still read
    (tmp_path / "real.jsonl").write_text(json.dumps(RECORDS[0]) + "\n")
    link.symlink_to(tmp_path / "real.jsonl")
    assert _read(link) == RECORDS[:1]
