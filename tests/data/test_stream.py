"""Instruct and classify data streamed into the prepared cache (sc2tune.data.stream) against the independent
reference, today's in-memory builder (``data.cache_dir: null``): the same rows and statistics with chunks
small enough to force many, with 1 and 2 workers; errors still name file:line; at most a chunk or two of
records alive at a time."""

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
    model = {"head": "sequence-classification"} if task == "classify" else {}
    spec = {"train": str(train), "eval": 0.2, "max_length": 64, "cache_dir": str(tmp_path / "cache"), **data}
    on = recipe_from_dict({"task": task, "data": spec, "model": model, "train": {"seed": 3}})
    off = recipe_from_dict({"task": task, "data": {**spec, "cache_dir": None}, "model": model, "train": {"seed": 3}})
    return on, off


def _rows(ds) -> dict | None:
    return None if ds is None else ds.to_dict()


CASES = [  # (task, data keys, also with 2 workers)
    ("instruct", {"packing": True}, True),
    ("instruct", {"packing": False, "max_length": 44}, False),  # truncation and dropped examples
    ("classify", {"packing": False, "text_column": "body", "text_pair_column": "other", "max_length": 12}, True),
]


@pytest.mark.parametrize("task, data, workers", CASES)
def test_streamed_rows_equal_the_in_memory_builder(tmp_path, tokenizer, monkeypatch, task, data, workers):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 3)  # many chunks; one pack buffer
    train = _instruct_jsonl(tmp_path) if task == "instruct" else _classify_csv(tmp_path)
    on, off = _recipes(tmp_path, task, train, **data)
    memory = build_datasets(off, tokenizer, show_progress=False)
    disk = build_datasets(on, tokenizer, show_progress=False)
    assert disk.prepared is not None
    assert disk.stats.to_dict() == memory.stats.to_dict()
    assert disk.id2label == memory.id2label
    assert _rows(disk.train) == _rows(memory.train) and _rows(disk.eval) == _rows(memory.eval)
    if task == "instruct" and not data["packing"]:
        assert memory.stats.truncated and memory.stats.dropped_examples  # the case covers both
    if not workers:
        return
    two = build_datasets(on.model_copy(update={"data": on.data.model_copy(
        update={"num_proc": 2, "cache_dir": str(tmp_path / "cache2")})}), tokenizer, show_progress=False)
    assert _rows(two.train) == _rows(disk.train) and _rows(two.eval) == _rows(disk.eval)
    assert two.stats.to_dict() == disk.stats.to_dict()


def _documents(ds) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every (input_ids, labels) document of packed rows (split where position ids restart), sorted."""
    docs = []
    for row in ds:
        starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["input_ids"])]
        docs += [(tuple(row["input_ids"][a:b]), tuple(row["labels"][a:b])) for a, b in zip(starts, starts[1:], strict=False)]
    return sorted(docs)


def test_several_pack_buffers_pack_the_same_documents(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK_RECORDS", 5)
    monkeypatch.setattr(stream, "PACK_TOKENS", 200)  # several pack buffers
    on, off = _recipes(tmp_path, "instruct", _instruct_jsonl(tmp_path, 60), packing=True, eval=None)
    memory = build_datasets(off, tokenizer, show_progress=False)
    disk = build_datasets(on, tokenizer, show_progress=False)
    assert _documents(disk.train) == _documents(memory.train)
    same = ("examples", "windows", "tokens", "trained_tokens", "truncated", "dropped_tokens", "dropped_examples")
    assert {k: getattr(disk.stats, k) for k in same} == {k: getattr(memory.stats, k) for k in same}
    assert all(len(r) <= 64 for r in disk.train["input_ids"])
    assert disk.stats.rows == len(disk.train) >= memory.stats.rows


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
    on, off = _recipes(tmp_path, "classify", train, packing=False, text_column="body", eval=str(other))
    with pytest.raises(DataError) as memory:
        build_datasets(off, tokenizer, show_progress=False)
    with pytest.raises(DataError) as disk:
        build_datasets(on, tokenizer, show_progress=False)
    assert f"'odd' (first at {other}:7)" in str(disk.value) and str(disk.value) == str(memory.value)


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
