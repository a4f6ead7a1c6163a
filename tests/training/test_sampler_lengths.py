"""Length-grouped sampling reads row lengths off the Arrow offsets, not row by row (5 minutes at 52k rows)."""

from __future__ import annotations

import datasets
import pytest
from transformers import TrainingArguments

from sc2tune.training.trainer import Sc2Trainer, row_lengths


def _dataset() -> datasets.Dataset:
    rows = [[7] * n for n in (5, 1, 9, 3, 3, 12, 2, 8)]
    return datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})


def test_row_lengths_equal_each_rows_length_also_after_select_and_shuffle():
    ds = _dataset()
    for view in (ds, ds.select([6, 0, 5]), ds.shuffle(seed=3)):
        assert row_lengths(view) == [len(r["input_ids"]) for r in view]
    with_column = ds.add_column("length", [len(r) * 10 for r in ds["input_ids"]]).shuffle(seed=1)
    assert row_lengths(with_column) == [r["length"] for r in with_column]


def test_the_sampler_gets_the_lengths_without_reading_rows(tmp_path, monkeypatch: pytest.MonkeyPatch):
    ds = _dataset()
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=2,
                             train_sampling_strategy="group_by_length")
    trainer = Sc2Trainer.__new__(Sc2Trainer)  # only the sampler is exercised: no model needed
    trainer.args, trainer.train_dataset = args, ds

    def no_row_reads(self, key):
        if isinstance(key, int):
            raise AssertionError("a row was read to learn its length")
        return original(self, key)

    original = datasets.Dataset.__getitem__
    monkeypatch.setattr(datasets.Dataset, "__getitem__", no_row_reads)
    sampler = trainer.length_grouped_sampler(ds)
    assert sampler.lengths == [5, 1, 9, 3, 3, 12, 2, 8]
    assert sorted(sampler) == list(range(len(ds)))


def test_a_length_column_is_read_as_one_column(tmp_path, monkeypatch: pytest.MonkeyPatch):
    ds = _dataset()
    ds = ds.add_column("length", [len(r) for r in ds["input_ids"]])
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, per_device_train_batch_size=2,
                             train_sampling_strategy="group_by_length")
    trainer = Sc2Trainer.__new__(Sc2Trainer)
    trainer.args, trainer.train_dataset = args, ds
    original = datasets.Dataset.__getitem__
    monkeypatch.setattr(datasets.Dataset, "__getitem__",
                        lambda self, key: (_ for _ in ()).throw(AssertionError("row read")) if isinstance(key, int)
                        else original(self, key))
    sampler = trainer.length_grouped_sampler(ds)
    assert sampler.lengths == [5, 1, 9, 3, 3, 12, 2, 8] and sorted(sampler) == list(range(len(ds)))
