"""``data.max_record_bytes``: a JSON line, ``.json`` record or CSV row larger than the bound is refused by
file and line (or record) while it is read, in memory bounded by the limit, not by the record. Reference for
the sizes: the bytes written by the test; for the records that pass: ``json`` / ``csv`` reading the same file."""

from __future__ import annotations

import csv
import json
import tracemalloc
from pathlib import Path

import pytest

from sc2tune.data import build_datasets, sources
from sc2tune.errors import DataError
from sc2tune.recipe import recipe_from_dict

MIB = 1 << 20


def _read(path: Path, limit: int) -> list[dict]:
    rows: list[dict] = []
    for part in sources.iter_records(str(path), "data.train", required=["text"], chunk=2, max_record_bytes=limit):
        rows += [dict(zip(part.columns, values, strict=True)) for values in zip(*part.columns.values(), strict=True)]
    return rows


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _line(size: int) -> str:
    """A JSON line of exactly ``size`` bytes (its newline aside)."""
    head = '{"text": "'
    return head + "x" * (size - len(head) - 2) + '"}'


def test_a_jsonl_line_at_the_limit_passes_one_byte_more_is_refused_by_line(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text(_line(100) + "\n" + _line(1000) + "\r\n" + _line(20) + "\n")
    assert _read(path, 1000) == [json.loads(x) for x in path.read_text().splitlines()]
    with pytest.raises(DataError, match=rf"{path}:2: a line of more than 999 bytes \(data\.max_record_bytes\)"):
        _read(path, 999)


def test_a_huge_jsonl_line_is_refused_without_reading_it_whole(tmp_path: Path):
    path = tmp_path / "d.jsonl"
    path.write_text(_line(50) + "\n" + _line(40 * MIB) + "\n")
    def read() -> None:
        with pytest.raises(DataError, match=rf"{path}:2: a line of more than 1,048,576 bytes"):
            _read(path, MIB)

    peak = _peak(read)
    assert peak < 8 * MIB  # the 40 MiB line was never held (before: the whole line, then json.loads of it)


def test_a_json_array_record_over_the_limit_is_refused_by_record_in_bounded_memory(tmp_path: Path):
    path = tmp_path / "d.json"
    small = [{"text": "a" * 100}, {"text": "b" * (MIB - 100)}]  # the second one close to the limit passes
    path.write_text(json.dumps(small))
    assert _read(path, MIB) == small
    path.write_text(json.dumps([*small, {"text": "c" * (40 * MIB)}, {"text": "d"}]))

    def read() -> None:
        with pytest.raises(DataError, match=rf"{path} record 2: a record of more than 1,048,576 bytes"):
            _read(path, MIB)

    assert _peak(read) < 8 * MIB


def test_csv_rows_are_bounded_across_lines_and_long_fields_within_the_bound_pass(tmp_path: Path):
    path = tmp_path / "d.csv"
    rows = [{"text": "short", "label": "a"}, {"text": "y" * 300_000, "label": "b"},  # over csv's 128 KiB default
            {"text": "line\n" * 80_000, "label": "c"}]  # one row over 80,000 lines, 400 kB
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    assert _read(path, MIB) == [{"text": r["text"]} for r in rows]
    with pytest.raises(DataError, match=rf"{path}:4: a CSV row of more than 350,000 bytes"):
        _read(path, 350_000)  # row 2 (300 kB, line 3) passes; row 3 starts on line 4
    assert csv.field_size_limit() == 131072  # the csv module's process-wide setting is restored


def test_the_recipe_key_reaches_the_reader(tmp_path: Path, tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"instruction": "q" * n, "output": "a"}) for n in (10, 5000, 10)) + "\n")
    recipe = recipe_from_dict({"task": "instruct", "data": {"train": str(path), "eval": None,
                                                            "max_record_bytes": 4096, "cache_dir": None}})
    with pytest.raises(DataError, match=rf"{path}:2: a line of more than 4,096 bytes"):
        build_datasets(recipe, tokenizer, show_progress=False)
    assert recipe_from_dict({"task": "instruct", "data": {"train": "x"}}).data.max_record_bytes == 8 * MIB
