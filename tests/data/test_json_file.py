"""`.json` sources streamed a record at a time (sc2tune.data.json_file) against the independent reference,
``json.loads`` of the whole file: the same records with the same types, JSON lines in a `.json` file, errors
that name the file and the record, the file read incrementally (a first chunk comes out after a small part
of the file was read, and before a syntax error further on), and the same prepared rows as a `.jsonl` file."""

from __future__ import annotations

import builtins
import json
import re
import tracemalloc
from pathlib import Path

import pytest

from sc2tune.data import build_datasets, json_file, sources
from sc2tune.errors import DataError
from sc2tune.recipe import recipe_from_dict

RECORD_SETS = {
    "unicode": [{"instruction": "héllo 世界 😀 \u2028", "output": "nul\u0000 tab\t nl\n quote\" back\\ /"},
                {"instruction": "", "output": "ascii"}],
    "nested": [{"a": {"b": [1, {"c": [None, True, False, []]}], "d": {}}, "e": [[[]]]}, {}],
    "floats": [{"x": 0.1, "y": 1e-7, "z": [1.5e300, -0.0, 2.5, 1.0, 123456789.123456789, 5e-324,
                                         1.7976931348623157e308, -3.0e-10, 100.0]}],
    "integers": [{"big": 2**63, "bigger": -(2**64) - 1, "huge": 10**40, "zero": 0, "neg": -7}],
    "null_and_booleans": [{"n": None, "t": True, "f": False, "list": [None, False, 0, ""]}],
}


def _read(path: Path) -> tuple[list, list]:
    """(positions, records) of a .json file as sc2tune reads it."""
    layout, start = json_file.json_layout(str(path))
    assert layout in ("array", "object")
    pairs = list(json_file.iter_json(str(path), layout, start))
    return [p for p, _ in pairs], [r for _, r in pairs]


@pytest.mark.parametrize("name", sorted(RECORD_SETS))
@pytest.mark.parametrize("dump", [{}, {"indent": 2}, {"ensure_ascii": False}])
def test_records_equal_json_loads_of_the_whole_file(tmp_path, name, dump):
    path = tmp_path / "d.json"
    path.write_text(json.dumps(RECORD_SETS[name], **dump), encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    positions, got = _read(path)
    assert got == expected
    assert repr(got) == repr(expected)  # same types: float not Decimal, int not float, -0.0 kept
    assert positions == list(range(len(expected)))


def test_number_spellings_read_as_json_loads_reads_them(tmp_path):
    text = '[{"a": 1E400, "b": -1e-400, "c": 1.0e+2, "d": 12345678901234567890123, "e": 0.30000000000000004, ' \
           '"f": 1e5, "g": -0, "h": 2E-3}]'
    path = tmp_path / "n.json"
    path.write_text(text)
    expected = json.loads(text)
    assert repr(_read(path)[1]) == repr(expected)


def test_an_object_holding_one_list_gives_that_list(tmp_path):
    records = RECORD_SETS["nested"] + RECORD_SETS["floats"]
    whole = {"version": 2, "meta": {"tags": ["x", "y"], "n": 1.5}, "data": records, "note": None}
    path = tmp_path / "o.json"
    for dump in ({}, {"indent": 1}):
        path.write_text(json.dumps(whole, **dump))
        assert repr(_read(path)[1]) == repr(json.loads(path.read_text())["data"])


def test_duplicate_keys_keep_the_last_as_json_loads_does(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[{"a": 1, "a": 2, "b": {"c": 1, "c": [3]}}]')
    assert _read(path)[1] == json.loads(path.read_text())


def test_a_huge_string_reads_back_whole(tmp_path):
    big = "ab\u00e9" * 1_000_000
    path = tmp_path / "h.json"
    path.write_text(json.dumps([{"instruction": "x", "output": big}, {"instruction": "y", "output": "z"}]))
    records = _read(path)[1]
    assert records[0]["output"] == big and records[1] == {"instruction": "y", "output": "z"}


def _iter(path: Path, *, chunk: int = 3, required=("instruction", "output")):
    return sources.iter_records(str(path), "data.train", required=list(required), chunk=chunk)


def test_json_lines_in_a_json_file_are_read_by_line(tmp_path):
    lines = ['{"instruction": "a", "output": "b"}', "", '{"instruction": "c", "output": 0.1}',
             '{"instruction": "d", "output": "e", "extra": [1, {"x": null}]}']
    path = tmp_path / "l.json"
    path.write_text("\n".join(lines) + "\n")
    layout, _ = json_file.json_layout(str(path))
    assert layout == "lines"
    parts = list(_iter(path, chunk=10))
    expected = [json.loads(line) for line in lines if line]
    assert parts[0].columns["output"] == [r["output"] for r in expected]
    assert parts[0].position == [1, 3, 4] and parts[0].where(1) == f"{path}:3"
    path.write_text(lines[0] + "\n" + '{"instruction": "no output"}\n')
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: record is missing .*'output'"):
        list(_iter(path))
    path.write_text(lines[0] + "\n" + "{not json\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: malformed JSON line"):
        list(_iter(path))


def _instruct_records(n: int) -> list[dict]:
    return [{"instruction": f"Say {i} {'please ' * (i % 4)}.", "input": "" if i % 3 else f"ctx {i}",
             "output": f"{i} " * (i % 9 + 1) + "x" * (i % 50)} for i in range(n)]


def test_a_syntax_error_at_record_3_names_the_file_and_record_3_after_the_first_chunk(tmp_path):
    records = _instruct_records(6)
    text = "[" + ",\n".join(json.dumps(r) for r in records) + "]"
    broken = text.replace('"Say 3 ', '"Say 3 \\q', 1)  # an invalid escape inside record 3
    assert broken != text
    path = tmp_path / "b.json"
    path.write_text(broken)
    with pytest.raises(json.JSONDecodeError):  # the reference also rejects it
        json.loads(broken)
    chunks = _iter(path, chunk=3)
    first = next(chunks)  # records 0-2 come out before the parser reaches record 3
    assert first.columns["instruction"] == [r["instruction"] for r in records[:3]]
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} record 3: malformed JSON \(.*\) near '") as err:
        next(chunks)
    assert "Traceback" not in str(err.value) and err.value.hint


@pytest.mark.parametrize("text, message", [
    ('{"instruction": "a", "output": "b"}', r"expected a list of records .*holds no list"),
    ('{"a": [{"instruction": "a", "output": "b"}], "b": []}', r"expected a list of records .*second list .*'b'"),
    ('"just a string"', r"expected a list of records"),
    ("", r"empty file"),
    (" \n\t\n", r"empty file"),
    ("[]", r"no records"),
    ('[{"instruction": "a", "output": "b"}', r"record 1: the file ends inside the JSON"),
    ('[{"instruction": "a", "output": "b"}] [1]', r"more text after the top-level JSON value"),
    ('[{"instruction": "a", "output": "b"}, {"instruction": "a", "output": NaN}]', r"record 1: malformed JSON"),
    ('[{"instruction": "a", "output": "b"}, 7]', r"record 1: expected a JSON object"),
])
def test_layout_and_syntax_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "e.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        list(_iter(path))
    assert str(err.value).startswith(str(path))


def test_non_utf8_bytes_are_named_with_the_record(tmp_path):
    path = tmp_path / "u.json"
    path.write_bytes(b'[{"instruction": "a", "output": "b"}, {"instruction": "caf\xe9", "output": "b"}]')
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} record 1: not UTF-8 text"):
        list(_iter(path))


N_BIG = 30_000  # records, about 4 MB


def _alpaca_file(tmp_path: Path, n: int, wrap: bool) -> Path:
    path = tmp_path / "big.json"
    records = _instruct_records(n)
    path.write_text(json.dumps({"data": records} if wrap else records, indent=1))
    return path


@pytest.mark.parametrize("wrap", [False, True])
def test_the_file_is_read_incrementally(tmp_path, monkeypatch, wrap):
    path = _alpaca_file(tmp_path, N_BIG, wrap)
    size = path.stat().st_size
    read = {"bytes": 0}

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def read(self, n=-1):
            data = self.fh.read(n)
            read["bytes"] += len(data)
            return data

        def readinto(self, buffer):  # what ijson's C backend calls
            n = self.fh.readinto(buffer)
            read["bytes"] += n
            return n

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def counting_open(*args, **kwargs):
        return Counting(builtins.open(*args, **kwargs))

    monkeypatch.setattr(json_file, "open", counting_open, raising=False)
    monkeypatch.setattr(json_file, "READ_BYTES", 1 << 16)
    chunks = _iter(path, chunk=3)
    first = next(chunks)
    assert len(first) == 3
    assert read["bytes"] < size / 10, (read["bytes"], size)  # a parse of the whole file reads it all
    assert sum(len(c) for c in chunks) == N_BIG - 3
    assert read["bytes"] >= size  # the counter sees the reads


def test_memory_while_streaming_stays_far_below_the_file_size(tmp_path, monkeypatch):
    monkeypatch.setattr(json_file, "READ_BYTES", 1 << 16)
    records = [{"instruction": f"Say {i}.", "output": f"{i} " * (i % 9 + 1) + "x" * (1000 + i % 50)}
               for i in range(4000)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(records, indent=1))  # about 4.4 MB
    size = path.stat().st_size
    list(_iter(path, chunk=3))  # imports done before measuring
    tracemalloc.start()
    try:
        n = sum(len(c) for c in _iter(path, chunk=3))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == len(records)
    assert peak < size / 8, (peak, size)  # json.loads of the whole file holds the text and every record


def _recipe(tmp_path: Path, train: Path, cache: str):
    return recipe_from_dict({"task": "instruct", "train": {"seed": 3}, "data": {
        "train": str(train), "eval": 0.25, "max_length": 64, "packing": True, "cache_dir": str(tmp_path / cache)}})


def test_a_json_source_prepares_the_rows_of_the_same_records_as_jsonl(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 6)  # several chunks (each costs datasets' map overhead)
    records = _instruct_records(16)
    as_jsonl, as_json = tmp_path / "i.jsonl", tmp_path / "i.json"
    as_jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    as_json.write_text(json.dumps(records, indent=2))
    ref = build_datasets(_recipe(tmp_path, as_jsonl, "c1"), tokenizer, show_progress=False)
    got = build_datasets(_recipe(tmp_path, as_json, "c2"), tokenizer, show_progress=False)
    assert got.prepared is not None and ref.prepared is not None
    assert got.train.to_dict() == ref.train.to_dict() and got.eval.to_dict() == ref.eval.to_dict()
    assert len(got.train) > 0 and len(got.eval) > 0


@pytest.mark.parametrize("key", ["", "data", "a.b", ".", "item"])
def test_the_list_of_an_object_is_found_under_any_key(tmp_path, key):
    text = json.dumps({"n": {"item": [1]}, key: RECORD_SETS["nested"] + RECORD_SETS["unicode"]})
    path = tmp_path / "k.json"
    path.write_text(text)
    assert repr(_read(path)[1]) == repr(json.loads(text)[key])


# Bytes yajl lets through (its UTF-8 check misses them) that Python's decoding, and so json.loads, refuses:
# an overlong "/", an encoded surrogate, a code point above U+10FFFF.
NOT_UTF8 = [b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]


@pytest.mark.parametrize("bad", NOT_UTF8)
@pytest.mark.parametrize("wrap", [False, True])
@pytest.mark.parametrize("in_key", [False, True])
def test_bytes_yajl_passes_but_utf8_refuses_are_named_with_the_record(tmp_path, bad, wrap, in_key):
    second = b'{"instruction": "c", "' + bad + b'": "b"}' if in_key else b'{"instruction": "c' + bad + b'", "output": "b"}'
    records = b'[{"instruction": "a", "output": "b"},\n' + second + b"]"
    data = b'{"data":\n' + records + b"}" if wrap else records
    with pytest.raises(UnicodeDecodeError):  # the reference refuses the file's text
        json.loads(data.decode("utf-8"))
    path = tmp_path / "u.json"
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} record 1: not UTF-8 text \(b'\\x") as err:
        list(_iter(path))
    assert err.value.hint == "save the file as UTF-8"


@pytest.mark.parametrize("bad", NOT_UTF8)
@pytest.mark.parametrize("text, line", [
    (b'\n\n{"x": 1, "instruction": "BAD"}\n{"instruction": "a", "output": "b"}\n', 3),  # lines
    (b'{"data": [{"instruction": "BAD", "output": "b"}]}', 1),  # an object on one line
])
def test_bytes_utf8_refuses_on_the_first_line_of_an_object_name_the_line(tmp_path, bad, text, line):
    data = text.replace(b"BAD", bad)
    with pytest.raises(UnicodeDecodeError):
        json.loads(data.decode("utf-8"))
    path = tmp_path / "u.json"
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:{line}: not UTF-8 text \(b'\\x"):
        json_file.json_layout(str(path))
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:{line}: not UTF-8 text"):
        list(_iter(path))


@pytest.mark.parametrize("where", ["key", "value"])
def test_surrogate_escapes_read_as_the_docstring_says_not_as_json_loads(tmp_path, where):
    path = tmp_path / "s.json"

    def both(escaped: str):
        text = f'[{{"{escaped}": 1}}]' if where == "key" else f'[{{"a": "{escaped}"}}]'
        path.write_text(text)
        record = json.loads(text)[0]
        return (next(iter(record)) if where == "key" else record["a"]), path

    def ours():
        record = _read(path)[1][0]
        return next(iter(record)) if where == "key" else record["a"]

    assert both(r"x\ud83d\ude00y")[0] == "x\U0001f600y" == ours()  # a pair reads as json.loads reads it
    assert both(r"x\ud800y")[0] == "x\ud800y" and ours() == "x?y"  # a lone high surrogate
    assert both(r"\ud800\u0041")[0] == "\ud800A" and ours() == "\U00010041"  # yajl joins it with any \u
    assert both(r"x\udc00")[0] == "x\udc00"  # a lone low surrogate: refused, naming the escape
    with pytest.raises(DataError, match=r"record 0: not UTF-8 text \(b'\\xed\\xb0\\x80'.*\\udc00-\\udfff escape"):
        ours()


def test_a_list_key_given_twice_is_refused_where_json_loads_keeps_the_last(tmp_path):
    text = '{"data": [{"instruction": "a", "output": "b"}], "n": 1, "data": [{"instruction": "c", "output": "d"}]}'
    assert json.loads(text)["data"] == [{"instruction": "c", "output": "d"}]
    path = tmp_path / "d.json"
    path.write_text(text)
    with pytest.raises(DataError, match=r"second list \(under 'data': the key is repeated, and json.loads would "
                                        r"keep the last\)"):
        list(_iter(path))
