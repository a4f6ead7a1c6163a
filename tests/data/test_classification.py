"""Classification data: label ids, unseen eval labels, truncation side, pairs, class counts."""

from __future__ import annotations

import json

import pytest

from sc2tune.data import build_datasets
from sc2tune.errors import DataError, RecipeError
from sc2tune.recipe import recipe_from_dict


def _recipe(model=None, **data):
    data.setdefault("eval", None)
    return recipe_from_dict({"task": "classify", "model": {"head": "sequence-classification", **(model or {})},
                             "data": data})


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_labels_sorted_and_counted(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "d.jsonl", [{"text": "a", "label": "spam"}, {"text": "b", "label": "ham"},
                                  {"text": "c", "label": "spam"}, {"text": "d", "label": "eggs"}])
    b = build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False)
    assert b.id2label == {0: "eggs", 1: "ham", 2: "spam"}
    assert b.train["labels"] == [2, 1, 2, 0]
    assert b.stats.class_counts == {"eggs": 1, "ham": 1, "spam": 2}
    assert b.train[0]["input_ids"] == _ids(tokenizer, "a") + [tokenizer.eos_token_id]


def test_integer_labels(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "d.jsonl", [{"text": "a", "label": 10}, {"text": "b", "label": 2}, {"text": "c", "label": 1}])
    b = build_datasets(_recipe(train="d.jsonl"), tokenizer, show_progress=False)
    assert b.id2label == {0: "1", 1: "2", 2: "10"}  # numeric order, not "1" < "10" < "2"
    _write(tmp_path / "e.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": 2}])
    b = build_datasets(_recipe(train="e.jsonl", model={"num_labels": 3}), tokenizer, show_progress=False)
    assert b.id2label == {0: "0", 1: "1", 2: "2"} and b.train["labels"] == [0, 2]


def test_unseen_eval_label_is_an_error(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "t.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    _write(tmp_path / "e.jsonl", [{"text": "a", "label": "x"}, {"text": "c", "label": "z"}])
    with pytest.raises(DataError) as err:
        build_datasets(_recipe(train="t.jsonl", eval="e.jsonl"), tokenizer, show_progress=False)
    assert "'z'" in str(err.value) and "e.jsonl:2" in str(err.value)


def test_truncation_side(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    text = " ".join(f"w{i}" for i in range(50))
    _write(tmp_path / "d.jsonl", [{"text": text, "label": 0}, {"text": "short", "label": 1}])
    full = _ids(tokenizer, text)
    eos = tokenizer.eos_token_id
    right = build_datasets(_recipe(train="d.jsonl", max_length=16), tokenizer, show_progress=False)
    assert right.train[0]["input_ids"] == full[:15] + [eos]
    left = build_datasets(_recipe(train="d.jsonl", max_length=16, truncation_side="left"), tokenizer,
                          show_progress=False)
    assert left.train[0]["input_ids"] == full[-15:] + [eos]
    assert (left.stats.truncated, left.stats.dropped_tokens) == (1, len(full) - 15)


def test_text_pair_longest_first(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    a, b = " ".join(f"a{i}" for i in range(40)), "b0 b1"
    _write(tmp_path / "d.jsonl", [{"q": a, "p": b, "y": "same"}, {"q": "x", "p": "y", "y": "diff"}])
    recipe = _recipe(train="d.jsonl", text_column="q", text_pair_column="p", label_column="y", max_length=20)
    row = build_datasets(recipe, tokenizer, show_progress=False).train[0]
    ia, ib, eos = _ids(tokenizer, a), _ids(tokenizer, b), tokenizer.eos_token_id
    assert row["input_ids"] == ia[: 18 - len(ib)] + [eos] + ib + [eos]


def test_errors(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "one.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}])
    with pytest.raises(DataError, match="at least two classes"):
        build_datasets(_recipe(train="one.jsonl"), tokenizer, show_progress=False)
    _write(tmp_path / "nolabel.jsonl", [{"text": "a", "label": "x"}, {"text": "b"}])
    with pytest.raises(DataError, match=r"nolabel\.jsonl:2: .*'label'"):
        build_datasets(_recipe(train="nolabel.jsonl"), tokenizer, show_progress=False)
    with pytest.raises(RecipeError, match="packing"):
        build_datasets(_recipe(train="one.jsonl", packing=True), tokenizer, show_progress=False)
