"""Record files (``sc2tune.data.sources``): a UTF-8 byte order mark at the start of a file, which Windows
editors and Excel's "CSV UTF-8" write, is skipped in every text format. Reference: the same records written
without it, read by ``json`` and ``csv`` themselves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from sc2tune.data import sources

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
