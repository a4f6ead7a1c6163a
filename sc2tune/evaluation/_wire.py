"""Plain-data wire format between the judge and the candidate process (stdlib only, no imports from sc2tune).

This file is sent verbatim (as ``python -c`` source, ahead of ``_judge.py`` or ``_candidate.py``) into
the two sandboxed processes, so it must stay importable on its own and define nothing else.

A message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. Values cross as a
tagged JSON tree that can only ever decode to exact builtin types, so nothing the candidate sends can
carry its own ``__eq__``, ``__hash__``, ``__bool__`` or ``__del__`` into the judge::

    None, bool, int, float, str      as themselves (NaN and infinities as JSON's NaN/Infinity)
    ["l", [...]]  list               ["t", [...]]  tuple
    ["s", [...]]  set                ["f", [...]]  frozenset
    ["d", [[k, v], ...]]  dict       ["b", "hex"]  bytes        ["c", [real, imag]]  complex

Encoding checks ``type(x) is T`` (never ``isinstance``), so a subclass of a builtin (an ``int`` whose
``__eq__`` always answers True) is refused instead of flattened into something that looks right.
"""

import json as _json
import os as _os

_WIRE_MAX_BYTES = 64 * 1024 * 1024  # one message; a larger length prefix is a protocol error
_WIRE_MAX_DEPTH = 200


class WireError(Exception):
    """A value that is not plain builtin data, or a malformed message."""


def wire_encode(value, depth=0):
    """The tagged JSON tree of ``value``; raises :class:`WireError` for anything but exact builtins."""
    if depth > _WIRE_MAX_DEPTH:
        raise WireError("value nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is int or kind is float or kind is str:
        return value
    if kind is list:
        return ["l", [wire_encode(v, depth + 1) for v in value]]
    if kind is tuple:
        return ["t", [wire_encode(v, depth + 1) for v in value]]
    if kind is set:
        return ["s", [wire_encode(v, depth + 1) for v in value]]
    if kind is frozenset:
        return ["f", [wire_encode(v, depth + 1) for v in value]]
    if kind is dict:
        return ["d", [[wire_encode(k, depth + 1), wire_encode(v, depth + 1)] for k, v in value.items()]]
    if kind is bytes:
        return ["b", value.hex()]
    if kind is complex:
        return ["c", [value.real, value.imag]]
    raise WireError(f"a value of type {kind.__module__}.{kind.__qualname__} is not plain data")


def wire_decode(tree, depth=0):
    """The builtin value of a tagged tree (the inverse of :func:`wire_encode`); strict about shape."""
    if depth > _WIRE_MAX_DEPTH:
        raise WireError("value nested too deeply")
    kind = type(tree)
    if tree is None or kind is bool or kind is int or kind is float or kind is str:
        return tree
    if kind is not list or len(tree) != 2 or type(tree[0]) is not str:
        raise WireError("malformed value")
    tag, payload = tree
    if tag == "b" and type(payload) is str:
        return bytes.fromhex(payload)
    if tag == "c" and type(payload) is list and len(payload) == 2 \
            and all(type(p) in (int, float) for p in payload):
        return complex(payload[0], payload[1])
    if type(payload) is not list:
        raise WireError("malformed value")
    if tag == "d":
        out = {}
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise WireError("malformed dict item")
            out[wire_decode(pair[0], depth + 1)] = wire_decode(pair[1], depth + 1)
        return out
    items = [wire_decode(v, depth + 1) for v in payload]
    if tag == "l":
        return items
    if tag == "t":
        return tuple(items)
    if tag == "s":
        return set(items)
    if tag == "f":
        return frozenset(items)
    raise WireError(f"unknown tag {tag!r}")


def wire_send(fd, message):
    """Write one message (a JSON-able dict) to ``fd``."""
    data = _json.dumps(message, allow_nan=True).encode("utf-8")
    if len(data) > _WIRE_MAX_BYTES:
        raise WireError(f"message of {len(data)} bytes is over the {_WIRE_MAX_BYTES} byte limit")
    view = memoryview(len(data).to_bytes(4, "big") + data)
    while view:
        view = view[_os.write(fd, view):]


def _wire_read_exact(fd, size):
    chunks, left = [], size
    while left:
        chunk = _os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def wire_receive(fd):
    """Read one message from ``fd``; :class:`EOFError` when the writer is gone, :class:`WireError`
    when what arrives is not a well-formed message."""
    size = int.from_bytes(_wire_read_exact(fd, 4), "big")
    if size > _WIRE_MAX_BYTES:
        raise WireError(f"message length {size} is over the limit")
    try:
        message = _json.loads(_wire_read_exact(fd, size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise WireError(f"malformed message: {err}") from None
    if type(message) is not dict:
        raise WireError("malformed message")
    return message
