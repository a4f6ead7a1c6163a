"""Metrics on hand-made cases with hand-computed answers."""

import pytest

from sc2tune.metrics import (
    classification_report,
    confusion_matrix,
    edit_similarity,
    exact_match,
    levenshtein,
    text_scores,
)


@pytest.mark.parametrize(("a", "b", "d"), [("kitten", "sitting", 3), ("flaw", "lawn", 2), ("", "abc", 3),
                                           ("abc", "abc", 0), ("ab", "ba", 2), ("return x", "return  x", 1)])
def test_levenshtein(a: str, b: str, d: int) -> None:
    assert levenshtein(a, b) == d
    assert levenshtein(b, a) == d


def test_edit_similarity_and_exact_match() -> None:
    assert edit_similarity("kitten", "sitting") == pytest.approx(1 - 3 / 7)
    assert edit_similarity("", "") == 1.0
    assert edit_similarity("", "abc") == 0.0
    assert exact_match("  return x\n", "return x")
    assert not exact_match("  return x\n", "return x", strip=False)
    assert not exact_match("return y", "return x")
    scores = text_scores(["return x\n", "abc"], ["return x", "abd"])
    assert scores["exact_match"] == 0.5
    # "return x\n" vs "return x": 1 deletion over 9 chars; "abc" vs "abd": 1 substitution over 3
    assert scores["edit_similarity"] == pytest.approx(((1 - 1 / 9) + (1 - 1 / 3)) / 2)


def test_confusion_matrix_hand_made() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    assert confusion_matrix(y_true, y_pred, ["a", "b", "c"]) == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert confusion_matrix(y_true, y_pred, ["c", "b", "a"]) == [[1, 0, 0], [1, 1, 0], [0, 1, 2]]
    with pytest.raises(ValueError, match="'d'"):
        confusion_matrix(["a"], ["d"], ["a", "b"])


def test_classification_report_hand_made() -> None:
    y_true = ["a", "a", "a", "b", "b", "c"]
    y_pred = ["a", "a", "b", "b", "c", "c"]
    report = classification_report(y_true, y_pred)
    assert report.labels == ["a", "b", "c"]
    assert report.accuracy == pytest.approx(4 / 6)
    # a: P = 2/2, R = 2/3, F1 = 0.8; b: P = 1/2, R = 1/2, F1 = 0.5; c: P = 1/2, R = 1/1, F1 = 2/3
    a, b, c = (report.per_class[k] for k in "abc")
    assert (a.precision, a.recall, a.f1, a.support) == pytest.approx((1.0, 2 / 3, 0.8, 3))
    assert (b.precision, b.recall, b.f1, b.support) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((0.5, 1.0, 2 / 3, 1))
    assert report.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_class_never_predicted_nor_present_is_left_out_of_macro_f1() -> None:
    report = classification_report([0, 0, 1], [0, 1, 1], labels=[0, 1, 2])
    # 0: P=1, R=1/2, F1=2/3; 1: P=1/2, R=1, F1=2/3; class 2 does not occur -> not averaged
    assert report.per_class["2"].f1 == 0.0 and report.per_class["2"].support == 0
    assert report.macro_f1 == pytest.approx(2 / 3)
    assert report.confusion == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
