"""Plain-data wire format between the judge and the candidate process (stdlib only, no imports from sc2tune).

This file is sent verbatim (as ``python -c`` source, ahead of ``_judge.py`` or ``_candidate.py``) into
the two sandboxed processes, so it must stay importable on its own and define nothing else.

A message is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. Values cross as a
tagged JSON tree that can only ever decode to exact builtin or standard-library value types, built on
the receiving side by its own interpreter, so nothing the candidate sends can carry its own ``__eq__``,
``__hash__``, ``__bool__`` or ``__del__`` into the judge::

    None, bool, float, str, int      as themselves (NaN and infinities as JSON's NaN/Infinity)
    ["i", "hex"]  int of more than 63 bits (hex has no digit limit: a 10,000-digit result crosses)
    ["l", [...]]  list               ["t", [...]]  tuple
    ["s", [...]]  set                ["f", [...]]  frozenset
    ["d", [[k, v], ...]]  dict       ["b", "hex"]  bytes        ["c", [real, imag]]  complex
    ["r", [start, stop, step]]  range
    ["C", [[k, v], ...]]  collections.Counter      ["O", [[k, v], ...]]  collections.OrderedDict
    ["D", [factory, [[k, v], ...]]]  collections.defaultdict; factory is the name of a builtin type
                                     (int, list, set, ...) or None (any other factory does not cross)
    ["Q", [maxlen, [...]]]  collections.deque
    ["N", [typename, [field, ...], [...]]]  a collections.namedtuple instance; the receiver builds its
                                     own namedtuple class from the names (plain strings)
    ["F", [numerator, denominator]]  fractions.Fraction       ["E", "text"]  decimal.Decimal
    ["K", [...]] / ["V", [...]] / ["J", [[k, v], ...]]  dict.keys() / .values() / .items() views
    ["I", [...]]  an iterator or generator: the sender runs it to the end; the receiver gets an
                  iterator over the decoded items (``list(x)``, ``sorted(x)``, ``next(x)``, ``for``
                  work; ``x == [...]`` is False, as for the original)

Encoding checks ``type(x) is T`` (never ``isinstance``), so a subclass of a builtin (an ``int`` whose
``__eq__`` always answers True) is refused instead of flattened into something that looks right. The
exceptions are by design: a namedtuple crosses as its type name, field names and values only, and any
object that is its own iterator (``iter(x) is x``: generators, ``map``, ``zip``, iterator classes)
crosses as the items it yields. Either way the receiver only ever sees values it builds itself.
"""

import json as _json
import os as _os

_WIRE_MAX_BYTES = 64 * 1024 * 1024  # one message; a larger length prefix is a protocol error
_WIRE_MAX_DEPTH = 200


class WireError(Exception):
    """A value that is not plain builtin data, or a malformed message."""


_BIG_INT_BITS = 63
_FACTORIES = {"int": int, "float": float, "str": str, "bytes": bytes, "bool": bool, "complex": complex,
              "list": list, "tuple": tuple, "dict": dict, "set": set, "frozenset": frozenset}
_FACTORY_NAMES = {v: k for k, v in _FACTORIES.items()}
_NAMEDTUPLES = {}  # (typename, fields) -> the receiver's own namedtuple class, built once
_KEYS, _VALUES = type({}.keys()), type({}.values())
#: types that cross as the list of their items (the builtin ones are built back by ``_BUILT``)
_ITEM_TAGS = {list: "l", tuple: "t", set: "s", frozenset: "f", _KEYS: "K", _VALUES: "V"}
_BUILT = {"l": list, "t": tuple, "s": set, "f": frozenset}


def _pairs(items, depth):
    return [[wire_encode(k, depth + 1), wire_encode(v, depth + 1)] for k, v in items]


def _collections():
    import collections
    import decimal
    import fractions

    return collections, fractions.Fraction, decimal.Decimal


def _is_namedtuple(value, kind):
    fields = getattr(kind, "_fields", None)
    return kind.__bases__ == (tuple,) and type(fields) is tuple and all(type(f) is str for f in fields) \
        and isinstance(value, tuple)


def wire_encode(value, depth=0):
    """The tagged JSON tree of ``value``; raises :class:`WireError` for anything else (see the table)."""
    if depth > _WIRE_MAX_DEPTH:
        raise WireError("value nested too deeply")
    kind = type(value)
    if kind is int:
        return value if value.bit_length() <= _BIG_INT_BITS else ["i", format(value, "x")]
    if value is None or kind is bool or kind is float or kind is str:
        return value
    if kind is list or kind is tuple or kind is set or kind is frozenset or kind is _KEYS or kind is _VALUES:
        return [_ITEM_TAGS[kind], [wire_encode(v, depth + 1) for v in value]]
    if kind is dict:
        return ["d", _pairs(value.items(), depth)]
    if kind is bytes:
        return ["b", value.hex()]
    if kind is complex:
        return ["c", [value.real, value.imag]]
    if kind is range:
        return ["r", [wire_encode(value.start), wire_encode(value.stop), wire_encode(value.step)]]
    collections, fraction, decimal = _collections()
    if kind is collections.Counter:
        return ["C", _pairs(dict.items(value), depth)]
    if kind is collections.OrderedDict:
        return ["O", _pairs(dict.items(value), depth)]
    if kind is collections.defaultdict:
        return ["D", [_FACTORY_NAMES.get(value.default_factory), _pairs(dict.items(value), depth)]]
    if kind is collections.deque:
        return ["Q", [value.maxlen, [wire_encode(v, depth + 1) for v in value]]]
    if kind is fraction:
        return ["F", [wire_encode(value.numerator), wire_encode(value.denominator)]]
    if kind is decimal:
        return ["E", str(value)]
    if kind is type({}.items()):
        return ["J", _pairs(value, depth)]
    if _is_namedtuple(value, kind):
        return ["N", [kind.__name__, list(kind._fields), [wire_encode(v, depth + 1) for v in tuple.__iter__(value)]]]
    if hasattr(kind, "__next__") and hasattr(kind, "__iter__") and iter(value) is value:
        return ["I", [wire_encode(v, depth + 1) for v in value]]
    raise WireError(f"a value of type {kind.__module__}.{kind.__qualname__} is not plain data")


def _int_of(tree):
    value = wire_decode(tree)
    if type(value) is not int:
        raise WireError("malformed value")
    return value


def _decode_pairs(payload, depth):
    out = []
    for pair in payload:
        if type(pair) is not list or len(pair) != 2:
            raise WireError("malformed dict item")
        out.append((wire_decode(pair[0], depth + 1), wire_decode(pair[1], depth + 1)))
    return out


def _decode_other(tag, payload, depth):
    """The standard-library value types (tags in upper case and ``i``, ``r``)."""
    collections, fraction, decimal = _collections()
    if tag == "i" and type(payload) is str and payload.lstrip("-").isalnum():
        try:
            return int(payload, 16)
        except ValueError:
            raise WireError("malformed int") from None
    if tag == "E" and type(payload) is str:
        try:
            return decimal(payload)
        except (ArithmeticError, ValueError):
            raise WireError("malformed Decimal") from None
    if type(payload) is not list:
        raise WireError("malformed value")
    if tag == "C":
        return collections.Counter(dict(_decode_pairs(payload, depth)))
    if tag == "O":
        return collections.OrderedDict(_decode_pairs(payload, depth))
    if tag == "J":
        return dict(_decode_pairs(payload, depth)).items()
    if tag == "K":
        return dict.fromkeys(wire_decode(v, depth + 1) for v in payload).keys()
    if tag == "V":
        return dict(enumerate(wire_decode(v, depth + 1) for v in payload)).values()
    if tag == "I":
        return iter([wire_decode(v, depth + 1) for v in payload])
    if tag == "r" and len(payload) == 3:
        try:
            return range(_int_of(payload[0]), _int_of(payload[1]), _int_of(payload[2]))
        except ValueError:
            raise WireError("malformed range") from None
    if tag == "F" and len(payload) == 2:
        numerator, denominator = _int_of(payload[0]), _int_of(payload[1])
        if denominator <= 0:
            raise WireError("malformed Fraction")
        return fraction(numerator, denominator)
    if tag == "D" and len(payload) == 2 and (payload[0] is None or payload[0] in _FACTORIES) \
            and type(payload[1]) is list:
        return collections.defaultdict(_FACTORIES.get(payload[0]), _decode_pairs(payload[1], depth))
    if tag == "Q" and len(payload) == 2 and type(payload[1]) is list \
            and (payload[0] is None or (type(payload[0]) is int and payload[0] >= 0)):
        return collections.deque([wire_decode(v, depth + 1) for v in payload[1]], payload[0])
    if tag == "N" and len(payload) == 3 and type(payload[0]) is str and type(payload[1]) is list \
            and all(type(f) is str for f in payload[1]) and type(payload[2]) is list \
            and len(payload[1]) == len(payload[2]):
        key = (payload[0], tuple(payload[1]))
        if key not in _NAMEDTUPLES:
            try:
                _NAMEDTUPLES[key] = collections.namedtuple(payload[0], payload[1])
            except (ValueError, TypeError, SyntaxError):
                raise WireError("malformed namedtuple") from None
        kind = _NAMEDTUPLES[key]
        return kind(*[wire_decode(v, depth + 1) for v in payload[2]])
    raise WireError(f"unknown tag {tag!r}")


def wire_decode(tree, depth=0):
    """The value of a tagged tree (the inverse of :func:`wire_encode`); strict about shape."""
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
    if tag not in ("d", "l", "t", "s", "f"):
        return _decode_other(tag, payload, depth)
    if type(payload) is not list:
        raise WireError("malformed value")
    if tag == "d":
        return dict(_decode_pairs(payload, depth))
    return _BUILT[tag]([wire_decode(v, depth + 1) for v in payload])


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
