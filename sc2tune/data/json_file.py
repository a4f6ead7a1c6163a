"""Records of a ``.json`` file, streamed: memory bounded by a record and a read, not by the file.

A ``.json`` source is one of three layouts, told apart from its first non-blank line the way a
whole-file ``json.loads`` would tell them:

* ``array``: a JSON array of records, ``[{...}, {...}]`` (Alpaca's ``alpaca_data.json``);
* ``object``: an object holding exactly one array of records, ``{"data": [{...}], "version": 2}``;
  its other values are skipped;
* ``lines``: JSON lines in a ``.json`` file: the first non-blank line is a whole JSON value and more text
  follows it (what ``json.loads`` calls "Extra data"); :mod:`sc2tune.data.sources` reads it as ``.jsonl``.

Arrays are parsed a record at a time by ijson (yajl2's C backend) from the binary file, :data:`READ_BYTES`
at a time (1 MiB: yajl's time on a string that spans reads grows as length**2 / read size; at ijson's
default 64 KiB a 16 MB string takes seconds). Values come out as ``json.loads`` gives them: ijson yields
``Decimal`` for a number with a fraction or exponent, turned here into ``float(Decimal(text))``, which is
``float(text)``, json's own conversion (ijson's ``use_float`` reads integers through yajl's int64 and
fails above 2**63). Where the file reads otherwise than by ``json.loads``:

* ``NaN``/``Infinity`` (not JSON, though ``json.dump`` writes them) are syntax errors;
* a ``\\ud800``-``\\udbff`` escape (a high surrogate) not followed by a ``\\u`` escape reads as ``"?"``, and
  followed by one that is not a low surrogate, yajl joins the two into one wrong character
  (``"\\ud800\\u0041"`` is ``"\\U00010041"``, not ``"\\ud800A"``): in keys and values alike;
* a lone ``\\udc00``-``\\udfff`` escape (a low surrogate) is refused as not UTF-8 text: yajl writes it as
  encoded surrogate bytes, which Python's UTF-8 decoding refuses (in a ``lines`` file this holds for the
  first line only, which is read by yajl to tell the layout; later lines are read by ``json.loads``);
* an ``object`` whose list key appears twice (``{"data": [...], "data": [...]}``) is refused as holding a
  second list; ``json.loads`` keeps the last one, which a stream cannot know until the end.

Bytes that are not UTF-8 are refused, as by ``json.loads`` of the decoded file, naming the record (or the
first line, for a file that starts with ``{``): yajl lets some through (overlong forms such as ``\\xc0\\xaf``,
encoded surrogates, code points above U+10FFFF) and Python's decoding of its strings refuses them.

Records are numbered from 0 (``FILE record N``, as the other formats number rows); a syntax error names
the record being read and quotes the text around it (ijson gives no byte offset). A record larger than
``data.max_record_bytes`` is refused as it is read, naming it (:class:`_Bounded` says how close the bound is).
"""

from __future__ import annotations

import collections
from codecs import BOM_UTF8
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from sc2tune.errors import DataError

#: JSON's whitespace (RFC 8259).
_BLANK = b" \t\r\n"
_READ = 1 << 16
#: Bytes ijson reads from a .json file at a time.
READ_BYTES = 1 << 20
_ONE_LIST = "expected a list of records (or an object holding one list)"
_LAYOUT_HINT = ("a .json file holds an array of records [{...}, ...] (or an object holding one such array); "
                "one record per line goes in a .jsonl file")


def json_layout(path: str) -> tuple[str, int]:
    """(``array`` | ``object`` | ``lines``, byte offset of the first non-blank byte) of a ``.json`` file.
    Reads the leading blanks and, for a file that starts with ``{``, its first non-blank line (through
    ijson's buffer, so a file on one line is read in bounded memory too)."""
    try:
        with open(path, "rb") as fh:
            bom = len(BOM_UTF8) if fh.read(len(BOM_UTF8)) == BOM_UTF8 else 0  # Windows editors write one; skipped
            fh.seek(bom)
            start = _skip_blanks(fh, path, bom)
            first = fh.read(1)
            if first == b"[":
                return "array", start
            if first != b"{":
                raise DataError(f"{path}: {_ONE_LIST}; the file starts with {first.decode('latin-1')!r}",
                                hint=_LAYOUT_HINT)
            fh.seek(start)
            try:
                lines = _whole_value_on_first_line(fh)
            except UnicodeDecodeError as err:  # yajl passes some bad UTF-8 on; Python's decode refuses it
                raise _not_utf8(f"{path}:{_line_at(fh, start)}", err) from None
            return ("lines" if lines else "object"), start
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None


def _skip_blanks(fh: Any, path: str, offset: int = 0) -> int:
    """Offset of the first non-blank byte at or after ``offset`` (where ``fh`` is); an empty (or all blank)
    file is an error."""
    while block := fh.read(_READ):
        rest = block.lstrip(_BLANK)
        if rest:
            offset += len(block) - len(rest)
            fh.seek(offset)
            return offset
        offset += len(block)
    raise DataError(f"{path}: empty file, no records", hint=_LAYOUT_HINT)


def _line_at(fh: Any, offset: int) -> int:
    """The line number (from 1) of byte ``offset`` of the file ``fh``."""
    fh.seek(0)
    newlines = 0
    while offset > 0 and (block := fh.read(min(_READ, offset))):
        newlines += block.count(b"\n")
        offset -= len(block)
    return newlines + 1


class _FirstLine:
    """A binary file read up to and including its next newline, then at its end."""

    def __init__(self, fh: Any) -> None:
        self.fh, self.done = fh, False

    def read(self, size: int = -1) -> bytes:
        if self.done:
            return b""
        data = self.fh.readline(size if size > 0 else -1) if size != 0 else b""
        self.done = data.endswith(b"\n") or (size != 0 and not data)
        return data


def _whole_value_on_first_line(fh: Any) -> bool:
    """Whether the line at ``fh`` holds a whole JSON value and non-blank text follows it (JSON lines)."""
    import ijson  # here: a cache lookup never reads a .json file

    try:
        collections.deque(ijson.basic_parse(_FirstLine(fh), buf_size=READ_BYTES), maxlen=0)
    except ijson.JSONError:  # the value goes on past the line (or is malformed: the object reading says where)
        return False
    while block := fh.read(_READ):
        if block.strip(_BLANK):
            return True
    return False


class _Bounded:
    """A binary file read by ijson, refusing to read on once more than ``limit`` bytes were read since
    ``mark`` (set after each record is yielded). ijson (yajl2_c) yields every record completed in what it has
    read before it reads again, so at a read the record being parsed began after ``mark`` minus one read: a
    record (with the blanks before it) of at most ``limit`` bytes never trips it, and one larger than
    ``limit`` plus two reads always does, with at most ``limit`` plus one read held. The refusal names the
    record being read (``record``, counted by the reader)."""

    def __init__(self, fh: Any, limit: int, path: str) -> None:
        self.fh, self.limit, self.path, self.total, self.mark, self.record = fh, limit, path, 0, 0, 0

    def read(self, size: int = -1) -> bytes:
        if self.total - self.mark > self.limit:
            raise record_too_large(f"{self.path} record {self.record}", self.limit)
        data = self.fh.read(size)
        self.total += len(data)
        return data


def record_too_large(where: str, limit: int, what: str = "a record") -> DataError:
    """The error for a record above ``data.max_record_bytes`` (JSON lines, .json records, CSV rows)."""
    return DataError(f"{where}: {what} of more than {limit:,} bytes (data.max_record_bytes); it is refused "
                     "before it is read whole",
                     hint="raise data.max_record_bytes if records this large are meant to be trained on (each "
                     "is held and tokenised whole), or remove the record")


def iter_json(path: str, layout: str, start: int, max_record_bytes: int | None = None
              ) -> Iterator[tuple[int, Any]]:
    """(record number from 0, record) of an ``array`` or ``object`` layout file (see :func:`json_layout`),
    read as they are consumed. Malformed JSON is a :class:`DataError` naming the file and record, and so is a
    record larger than ``max_record_bytes`` (checked as the file is read, :class:`_Bounded`; ijson then reads
    ``min(READ_BYTES, max_record_bytes // 8)`` bytes at a time, at least 4 KiB)."""
    import ijson  # here: a cache lookup never reads a .json file

    n = 0
    limit = max_record_bytes if max_record_bytes is not None else 1 << 62
    buf = max(4096, min(READ_BYTES, limit // 8))
    with open(path, "rb") as fh:
        fh.seek(start)
        reader = _Bounded(fh, limit, path)
        source = reader if layout == "array" else _held_list(ijson.parse(reader, buf_size=buf), path)
        items = ijson.items(source, "item", buf_size=buf)
        try:
            for record in items:
                reader.mark = reader.total
                yield n, _as_json_loads(record)
                n = reader.record = n + 1
        except ijson.JSONError as err:
            raise _syntax_error(path, n, err) from None
        except UnicodeDecodeError as err:  # yajl passes some bad UTF-8 on; Python's decode refuses it
            raise _not_utf8(f"{path} record {n}", err) from None


def _held_list(events: Iterator[tuple[str, str, Any]], path: str) -> Iterator[tuple[str, str, Any]]:
    """The parse events of the one array a top-level object holds, as if that array were the file."""
    depth, inside, lists, cut, key = 0, False, 0, 0, ""
    for prefix, event, value in events:
        if event in ("start_map", "start_array"):
            depth += 1
            if depth == 2 and event == "start_array":  # a value of the top-level object that is an array
                lists += 1
                if lists > 1:
                    again = ": the key is repeated, and json.loads would keep the last" if prefix == key else ""
                    raise DataError(f"{path}: {_ONE_LIST}; found a second list (under '{prefix}'{again})",
                                    hint=_LAYOUT_HINT)
                key = prefix
                inside, cut = True, len(prefix) + 1 if prefix else 0  # under key "" the items are "item"
                yield "", event, value
                continue
        elif event in ("end_map", "end_array"):
            depth -= 1
            if inside and depth == 1:
                inside = False
                yield "", event, value
                continue
        if inside:
            yield prefix[cut:], event, value
    if not lists:
        raise DataError(f"{path}: {_ONE_LIST}; the top-level object holds no list", hint=_LAYOUT_HINT)


def _as_json_loads(value: Any) -> Any:
    """``value`` with ijson's ``Decimal`` numbers as the floats ``json.loads`` gives."""
    kind = type(value)
    if kind is dict:
        return {k: _as_json_loads(v) for k, v in value.items()}
    if kind is list:
        return [_as_json_loads(v) for v in value]
    if kind is Decimal:
        return float(value)
    return value


def _syntax_error(path: str, n: int, err: Exception) -> DataError:
    """ijson's error (first line: yajl's reason; second: the text around the error) as a DataError."""
    text = err.args[0] if err.args else str(err)
    lines = (text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)).splitlines()
    reason = lines[0].strip() if lines else "malformed JSON"
    near = lines[1].strip() if len(lines) > 1 else ""
    where = f" near {near!r}" if near else ""
    if "trailing garbage" in reason:
        after = f" (after record {n - 1})" if n else ""
        return DataError(f"{path}: more text after the top-level JSON value ends{after}{where}", hint=_LAYOUT_HINT)
    if "premature EOF" in reason:
        return DataError(f"{path} record {n}: the file ends inside the JSON (is it cut short?)",
                         hint="a .json array of records ends with ']'")
    if "UTF8" in reason:
        return DataError(f"{path} record {n}: not UTF-8 text ({reason}){where}", hint="save the file as UTF-8")
    hint = ("NaN and Infinity are not JSON (Python's json.dump writes them): write null"
            if "NaN" in near or "Infinity" in near else "fix the JSON there")
    return DataError(f"{path} record {n}: malformed JSON ({reason}){where}", hint=hint)


def _not_utf8(where: str, err: UnicodeDecodeError) -> DataError:
    """Python's refusal of a string yajl passed (it lets overlong forms, encoded surrogates and code points
    above U+10FFFF through) as a DataError. yajl writes a lone ``\\udc00``-``\\udfff`` escape as such an
    encoded surrogate too, so that cause is named with it."""
    data = err.object
    low_surrogate = data[err.start:err.start + 1] == b"\xed" and b"\xb0" <= data[err.start + 1:err.start + 2] <= b"\xbf"
    bad = bytes(data[err.start:err.start + 3] if low_surrogate else data[err.start:err.end])
    if low_surrogate:
        return DataError(f"{where}: not UTF-8 text ({bad!r}: {err.reason}; a \\udc00-\\udfff escape with no "
                         "\\ud800-\\udbff escape before it reads as these bytes too)",
                         hint="save the file as UTF-8; a lone \\udc00-\\udfff escape is not text (drop it)")
    return DataError(f"{where}: not UTF-8 text ({bad!r}: {err.reason})", hint="save the file as UTF-8")
