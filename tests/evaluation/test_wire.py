"""The judge <-> candidate wire format: only exact builtin and stdlib value types cross, malformed input is
refused. The reference for a round trip is the original value under Python's own ``==`` and ``type``."""

from __future__ import annotations

import collections
import math
import os
from decimal import Decimal
from fractions import Fraction

import pytest

from sc2tune.evaluation._wire import WireError, wire_decode, wire_encode, wire_receive, wire_send

VALUES = [None, True, False, 0, -7, 10 ** 30, 1.5, -0.0, math.inf, "", "é\n", b"\x00\xff", 2 + 3j,
          [], [1, [2, (3, "x")]], (), (1,), {1, "a"}, frozenset({(1, 2)}), {1: [2], (3, 4): {"k": None}},
          [True, 1, 1.0]]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}-{sorted(map(repr, v))}"
                         if isinstance(v, (set, frozenset)) else repr(v))  # a set's repr follows the hash seed
def test_builtin_values_round_trip_with_their_exact_types(value: object) -> None:
    back = wire_decode(wire_encode(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, list):  # 1, True and 1.0 stay distinct types inside containers too
        assert [type(v) for v in back] == [type(v) for v in value]


_Pair = collections.namedtuple("_Pair", "left right")
STDLIB_VALUES = [
    10 ** 5000 + 7, -(2 ** 64), 2 ** 63, [10 ** 4400, -(10 ** 4400)], range(-3, 10 ** 30, 7),
    collections.Counter("abracadabra"), collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.deque([1, (2, 3)], maxlen=5), collections.deque(), Fraction(-10 ** 40, 3), Fraction(0),
    Decimal("0.1"), Decimal("-1.50E+3"), {"k": collections.Counter(x=2)},
]


@pytest.mark.parametrize("value", STDLIB_VALUES, ids=lambda v: type(v).__name__)
def test_stdlib_values_round_trip_by_value_and_type(value: object) -> None:
    back = wire_decode(wire_encode(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, collections.deque):
        assert back.maxlen == value.maxlen
    if isinstance(value, collections.OrderedDict):  # order is part of an OrderedDict's equality
        assert list(back) == list(value)


def test_decimal_specials_and_namedtuples_cross_by_value() -> None:
    assert wire_decode(wire_encode(Decimal("NaN"))).is_nan()
    back = wire_decode(wire_encode(_Pair(1, [2])))
    # the receiver's own namedtuple class: equal to the tuple, fields by name, not the sender's class
    assert back == (1, [2]) and back.left == 1 and back.right == [2] and type(back) is not _Pair
    assert type(back).__name__ == "_Pair" and type(back).__bases__ == (tuple,)


def test_defaultdict_keeps_a_builtin_factory_only() -> None:
    back = wire_decode(wire_encode(collections.defaultdict(list, {"a": [1]})))
    assert type(back) is collections.defaultdict and back == {"a": [1]} and back["new"] == []
    back = wire_decode(wire_encode(collections.defaultdict(lambda: 0, {"a": 1})))
    assert back == {"a": 1} and back.default_factory is None


def test_iterators_cross_as_their_items() -> None:
    for value, items in [((i * i for i in range(4)), [0, 1, 4, 9]), (map(str, [1, 2]), ["1", "2"]),
                         (iter({3: 4}.items()), [(3, 4)]), (zip("ab", [1, 2], strict=True), [("a", 1), ("b", 2)])]:
        back = wire_decode(wire_encode(value))
        assert iter(back) is back and list(back) == items and list(back) == []
    views = {"a": 1, "b": 2}
    assert sorted(wire_decode(wire_encode(views.keys()))) == ["a", "b"]
    assert wire_decode(wire_encode(views.keys())) == {"a", "b"}  # a keys view equals a set, as the original
    assert sorted(wire_decode(wire_encode(views.values()))) == [1, 2]
    assert wire_decode(wire_encode(views.items())) == {("a", 1), ("b", 2)}


@pytest.mark.parametrize("tree", [["i", "xyz"], ["i", 5], ["F", [1, 0]], ["F", [1, "2"]], ["E", "abc"],
                                  ["D", ["eval", []]], ["Q", [-1, []]], ["N", ["P", ["a", "_b"], [1, 2]]],
                                  ["N", ["import os", ["a"], [1]]], ["N", ["P", ["a"], [1, 2]]],
                                  ["r", [0, 1, 0]], ["Z", []]], ids=repr)
def test_malformed_stdlib_trees_are_refused(tree: object) -> None:
    with pytest.raises(WireError):
        wire_decode(tree)


def test_nan_crosses_as_nan() -> None:
    assert math.isnan(wire_decode(wire_encode(math.nan)))


class _Int(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class _Anything:
    def __eq__(self, other: object) -> bool:
        return True


class _Counter(collections.Counter):
    def __eq__(self, other: object) -> bool:
        return True


class _Point(collections.namedtuple("_Point", "x y")):
    def __eq__(self, other: object) -> bool:
        return True


@pytest.mark.parametrize("value", [_Int(3), [_Anything()], {"k": _Int(1)}, object, bytearray(b"x"),
                                   _Counter(a=1), _Point(1, 2), iter([_Anything()]), (x for x in [_Int(1)]),
                                   collections.defaultdict(int, k=_Anything())],
                         ids=lambda v: type(v).__name__)  # not repr: an object's repr holds its address
def test_anything_but_exact_builtins_is_refused(value: object) -> None:
    with pytest.raises(WireError):
        wire_encode(value)


@pytest.mark.parametrize("tree", [["l"], ["x", []], ["d", [[1]]], {"a": 1}, ["l", [["t", 5]]], ["b", 3]],
                         ids=repr)
def test_malformed_trees_are_refused(tree: object) -> None:
    with pytest.raises(WireError):
        wire_decode(tree)


def test_too_deep_is_refused() -> None:
    tree: object = 1
    for _ in range(500):
        tree = ["l", [tree]]
    with pytest.raises(WireError):
        wire_decode(tree)


def test_messages_are_framed_and_malformed_frames_refused() -> None:
    r, w = os.pipe()
    try:
        wire_send(w, {"return": wire_encode([1, (2, 3)])})
        assert wire_decode(wire_receive(r)["return"]) == [1, (2, 3)]
        os.write(w, (4).to_bytes(4, "big") + b"\xff{}x")
        with pytest.raises(WireError):
            wire_receive(r)
        os.write(w, (2 ** 31).to_bytes(4, "big"))
        with pytest.raises(WireError):
            wire_receive(r)
    finally:
        os.close(w)
    with pytest.raises(EOFError):
        wire_receive(r)
    os.close(r)
