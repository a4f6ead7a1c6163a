"""Text and classification metrics, in plain Python (no scikit-learn needed).

Text (infilling):

* exact match: ``normalise(prediction) == normalise(reference)``; the default normalisation strips
  leading/trailing whitespace (as line-infilling benchmarks do), ``strip=False`` compares raw strings;
* edit similarity: ``1 - lev(a, b) / max(len(a), len(b))`` with ``lev`` the Levenshtein distance
  (insert, delete, substitute, each cost 1) over characters; 1.0 for two empty strings.

Classification (``labels`` fixes the class order; default = sorted union of true and predicted):

* confusion matrix ``M[i][j]`` = number of examples of true class ``labels[i]`` predicted ``labels[j]``;
* accuracy = trace(M) / sum(M);
* per class: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R), each 0.0 when its
  denominator is 0 (no prediction / no example of the class), support = TP + FN;
* macro-F1 = mean of the per-class F1 over the classes that occur in the true or predicted labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass


def levenshtein(a: str, b: str) -> int:
    """Edit distance between ``a`` and ``b`` (two-row dynamic programme, O(len(a) * len(b)))."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def edit_similarity(prediction: str, reference: str) -> float:
    """``1 - lev(prediction, reference) / max(len)``, in [0, 1]; 1.0 when both are empty."""
    longest = max(len(prediction), len(reference))
    if longest == 0:
        return 1.0
    return 1.0 - levenshtein(prediction, reference) / longest


def exact_match(prediction: str, reference: str, *, strip: bool = True) -> bool:
    """Equality after stripping surrounding whitespace (``strip=False``: raw equality)."""
    if strip:
        return prediction.strip() == reference.strip()
    return prediction == reference


def text_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match and mean edit similarity over aligned pairs."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        return {"exact_match": 0.0, "edit_similarity": 0.0, "count": 0}
    pairs = list(zip(predictions, references, strict=True))
    return {
        "exact_match": sum(exact_match(p, r) for p, r in pairs) / len(pairs),
        "edit_similarity": sum(edit_similarity(p, r) for p, r in pairs) / len(pairs),
        "count": len(pairs),
    }


@dataclass(frozen=True)
class ClassScores:
    """Precision, recall, F1 and support of one class."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ClassificationReport:
    """Accuracy, macro-F1, per-class scores and the confusion matrix (rows = true, columns = predicted)."""

    labels: list[str]
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassScores]
    confusion: list[list[int]]

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1, "labels": self.labels,
                "per_class": {k: asdict(v) for k, v in self.per_class.items()}, "confusion": self.confusion}


def confusion_matrix(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                     labels: Sequence[Hashable]) -> list[list[int]]:
    """``M[i][j]`` = count of true ``labels[i]`` predicted as ``labels[j]``; unknown labels are an error."""
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels for {len(y_pred)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        if t not in index or p not in index:
            raise ValueError(f"label {t if t not in index else p!r} is not in labels {list(labels)}")
        matrix[index[t]][index[p]] += 1
    return matrix


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def classification_report(y_true: Sequence[Hashable], y_pred: Sequence[Hashable],
                           labels: Sequence[Hashable] | None = None) -> ClassificationReport:
    """All classification metrics of the module docstring from aligned true and predicted labels."""
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred), key=str)
    matrix = confusion_matrix(y_true, y_pred, labels)
    total = sum(map(sum, matrix))
    per_class: dict[str, ClassScores] = {}
    occurring = []
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        predicted = sum(row[i] for row in matrix)
        actual = sum(matrix[i])
        precision, recall = _ratio(tp, predicted), _ratio(tp, actual)
        f1 = _ratio(2 * tp, predicted + actual)  # = 2PR / (P + R)
        per_class[str(label)] = ClassScores(precision, recall, f1, actual)
        if predicted or actual:
            occurring.append(f1)
    accuracy = _ratio(sum(matrix[i][i] for i in range(len(labels))), total)
    macro = sum(occurring) / len(occurring) if occurring else 0.0
    return ClassificationReport([str(x) for x in labels], accuracy, macro, per_class, matrix)
