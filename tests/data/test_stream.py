"""Instruct and classify data streamed into prepared rows (sc2tune.data.stream): the same rows and statistics
whether the records come in one chunk or in many, with 1 or 2 workers (the rows themselves are checked against
plain tokenizer calls in test_rows.py); errors still name file:line; at most a chunk or two of records alive
at a time."""

from __future__ import annotations

import csv
import json
import weakref
from pathlib import Path

import pytest

from sc2tune.data import build_datasets, sources, stream
from sc2tune.errors import DataError
from sc2tune.recipe import recipe_from_dict


def _instruct_jsonl(tmp_path: Path, n: int = 24) -> Path:
    path = tmp_path / "i.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Say {i} {'please ' * (i % 4)}.",
                                        "input": "" if i % 3 else f"ctx {i}",
                                        "output": f"{i} " * (i % 9 + 1) + "x" * (i % 50)}) + "\n" for i in range(n)))
    return path


def _classify_csv(tmp_path: Path, n: int = 24) -> Path:
    path = tmp_path / "c.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["body", "other", "label"])
        for i in range(n):
            w.writerow([f"text {i} " * (i % 6 + 1), f"pair {i}", ["neg", "pos", "mid"][i % 3]])
    return path


def _recipes(tmp_path: Path, task: str, train: Path, **data):
    """(recipe, the same recipe with its own cache folder, each call a fresh one)."""
    model = {"head": "sequence-classification"} if task == "classify" else {}
    spec = {"train": str(train), "eval": 0.2, "max_length": 64, "cache_dir": str(tmp_path / "cache"), **data}
    on = recipe_from_dict({"task": task, "data": spec, "model": model, "train": {"seed": 3}})
    fresh = len(list(tmp_path.glob("cache*")))
    return on, on.model_copy(update={"data": on.data.model_copy(update={"cache_dir": str(tmp_path / f"cache{fresh}")})})


def _rows(ds) -> dict | None:
    return None if ds is None else ds.to_dict()


CASES = [  # (task, data keys, also with 2 workers)
    ("instruct", {"packing": True}, True),
    ("instruct", {"packing": False, "max_length": 44}, False),  # truncation and dropped examples
    ("classify", {"packing": False, "text_column": "body", "text_pair_column": "other", "max_length": 12}, True),
]


@pytest.mark.parametrize("task, data, workers", CASES)
def test_rows_do_not_depend_on_chunks_or_workers(tmp_path, tokenizer, monkeypatch, task, data, workers):
    train = _instruct_jsonl(tmp_path) if task == "instruct" else _classify_csv(tmp_path)
    on, _ = _recipes(tmp_path, task, train, **data)
    whole = build_datasets(on, tokenizer, show_progress=False)  # one chunk of records
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 3)  # many chunks; one pack buffer
    _, other = _recipes(tmp_path, task, train, **data)
    many = build_datasets(other, tokenizer, show_progress=False)
    assert many.prepared != whole.prepared
    assert many.stats.to_dict() == whole.stats.to_dict()
    assert many.id2label == whole.id2label
    assert _rows(many.train) == _rows(whole.train) and _rows(many.eval) == _rows(whole.eval)
    if task == "instruct" and not data["packing"]:
        assert whole.stats.truncated and whole.stats.dropped_examples  # the case covers both
    if not workers:
        return
    _, other = _recipes(tmp_path, task, train, **data)
    two = build_datasets(other.model_copy(update={"data": other.data.model_copy(update={"num_proc": 2})}),
                         tokenizer, show_progress=False)
    assert _rows(two.train) == _rows(many.train) and _rows(two.eval) == _rows(many.eval)
    assert two.stats.to_dict() == many.stats.to_dict()


def test_a_bad_record_in_a_later_chunk_names_its_file_and_line(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 4)
    path = _instruct_jsonl(tmp_path, 30)
    lines = path.read_text().splitlines()
    lines[24] = json.dumps({"instruction": "no output here"})
    path.write_text("\n".join(lines) + "\n")
    for eval_ in (None, 0.2):  # streamed straight, and after the counting pass
        on, _ = _recipes(tmp_path, "instruct", path, eval=eval_)
        with pytest.raises(DataError, match=f"{path}:25: record is missing .* 'output'"):
            build_datasets(on, tokenizer, show_progress=False)
    lines[24] = "{not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=f"{path}:25: malformed JSON line"):
        build_datasets(_recipes(tmp_path, "instruct", path, eval=None)[0], tokenizer, show_progress=False)


def test_an_eval_label_training_never_has_is_named_where_it_appears(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 4)
    train, other = _classify_csv(tmp_path), tmp_path / "e.jsonl"
    other.write_text("".join(json.dumps({"body": f"t{i}", "label": "pos" if i != 6 else "odd"}) + "\n"
                             for i in range(10)))
    on, _ = _recipes(tmp_path, "classify", train, packing=False, text_column="body", eval=str(other))
    with pytest.raises(DataError) as err:
        build_datasets(on, tokenizer, show_progress=False)
    assert f"data.eval has label(s) the training data never has: 'odd' (first at {other}:7)" in str(err.value)


def test_at_most_two_chunks_of_records_are_alive(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 2)
    alive: list[weakref.ref] = []
    most = 0

    def counting(*args, **kwargs):
        nonlocal most
        for part in sources.iter_records(*args, **kwargs):  # freed by reference counting: no gc.collect
            most = max(most, sum(ref() is not None for ref in alive))
            alive.append(weakref.ref(part))
            yield part

    monkeypatch.setattr(stream, "iter_records", counting)
    on, _ = _recipes(tmp_path, "instruct", _instruct_jsonl(tmp_path, 24), packing=True)
    build_datasets(on, tokenizer, show_progress=False)
    assert len(alive) >= 3 * 12  # counting pass, train pass, eval pass
    assert most <= 1  # besides the one being handed over, at most the previous is still referenced
