"""The judge <-> candidate wire format: only exact builtin values cross, malformed input is refused."""

from __future__ import annotations

import math
import os

import pytest

from sc2tune.evaluation._wire import WireError, wire_decode, wire_encode, wire_receive, wire_send

VALUES = [None, True, False, 0, -7, 10 ** 30, 1.5, -0.0, math.inf, "", "é\n", b"\x00\xff", 2 + 3j,
          [], [1, [2, (3, "x")]], (), (1,), {1, "a"}, frozenset({(1, 2)}), {1: [2], (3, 4): {"k": None}},
          [True, 1, 1.0]]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_builtin_values_round_trip_with_their_exact_types(value: object) -> None:
    back = wire_decode(wire_encode(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, list):  # 1, True and 1.0 stay distinct types inside containers too
        assert [type(v) for v in back] == [type(v) for v in value]


def test_nan_crosses_as_nan() -> None:
    assert math.isnan(wire_decode(wire_encode(math.nan)))


class _Int(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


class _Anything:
    def __eq__(self, other: object) -> bool:
        return True


@pytest.mark.parametrize("value", [_Int(3), [_Anything()], {"k": _Int(1)}, (x for x in ()), object,
                                   range(3), bytearray(b"x")], ids=repr)
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
