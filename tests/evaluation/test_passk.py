"""pass@k against hand-computed values and exact binomial fractions."""

from fractions import Fraction
from math import comb

import pytest

from sc2tune.errors import UserError
from sc2tune.evaluation.passk import mean_pass_at_k, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (10, 3, 1, 0.3),  # pass@1 = c / n
        (10, 3, 2, 24 / 45),  # 1 - C(7,2)/C(10,2) = 1 - 21/45
        (5, 0, 3, 0.0),
        (5, 5, 3, 1.0),
        (4, 2, 3, 1.0),  # n - c < k: every draw of 3 contains a correct one
        (200, 1, 100, 0.5),  # 1 - C(199,100)/C(200,100) = 1 - 100/200
        (20, 4, 10, 1 - 8008 / 184756),  # C(16,10) = 8008, C(20,10) = 184756
    ],
)
def test_pass_at_k_hand_values(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_exact_binomials() -> None:
    for n in range(1, 25):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - Fraction(comb(n - c, k), comb(n, k))
                assert pass_at_k(n, c, k) == pytest.approx(float(exact), abs=1e-12)


def test_mean_over_tasks_and_k_above_n_left_out() -> None:
    scores = mean_pass_at_k({"a": (2, 1), "b": (2, 0), "c": (3, 3)}, [1, 2, 5])
    assert scores == {"pass@1": pytest.approx((0.5 + 0 + 1) / 3), "pass@2": pytest.approx((1 + 0 + 1) / 3)}


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError):
        pass_at_k(3, 1, 4)
    with pytest.raises(UserError):
        mean_pass_at_k({}, [1])
