"""Sc2Trainer stays on transformers' public hooks: it overrides no private Trainer method, the private ones it
calls still have the parameters it passes, and its checkpoint and sampler hooks do what the private overrides
did (a checkpoint appears whole or not at all; the length-grouped order is transformers' own)."""

from __future__ import annotations

import inspect
from pathlib import Path

import datasets
import pytest
import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from sc2tune.modeling import objective_for
from sc2tune.training.callbacks import AtomicCheckpointCallback
from sc2tune.training.trainer import PRIVATE_TRAINER_METHODS, Sc2Trainer


def test_no_private_trainer_method_is_overridden():
    overridden = [name for name, value in vars(Sc2Trainer).items()
                  if callable(value) and name.startswith("_") and not name.startswith("__") and hasattr(Trainer, name)]
    assert overridden == [], "use a public Trainer method or a TrainerCallback (or call it: PRIVATE_TRAINER_METHODS)"


@pytest.mark.parametrize("name", sorted(PRIVATE_TRAINER_METHODS))
def test_the_private_methods_called_keep_their_parameters(name: str):
    method = getattr(Trainer, name, None)
    assert method is not None, f"transformers.Trainer.{name} is gone: sc2tune.training.trainer calls it"
    assert tuple(inspect.signature(method).parameters) == PRIVATE_TRAINER_METHODS[name], (
        f"transformers.Trainer.{name} changed its parameters: check sc2tune.training.trainer's call of it")


def test_the_private_methods_are_called_only_in_trainer_py():
    package = Path(__file__).parents[2] / "sc2tune"
    calls = {f".{name}(" for name in PRIVATE_TRAINER_METHODS}
    found = [str(f.relative_to(package)) for f in package.rglob("*.py")
             if f.name != "trainer.py" and any(call in f.read_text() for call in calls)]
    assert found == []


class _Tiny(torch.nn.Module):
    """A one-weight model: the trainer's machinery without a language model."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


def _trainer(tmp_path: Path, **arguments) -> Sc2Trainer:
    rows = [[7] * n for n in (5, 1, 9, 3, 3, 12, 2, 8, 4, 6, 10, 11)]
    dataset = datasets.Dataset.from_dict({"input_ids": rows, "labels": rows})
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints" / ".staging"), report_to=[], use_cpu=True,
                             remove_unused_columns=False, disable_tqdm=True, **arguments)
    return Sc2Trainer(model=_Tiny(), args=args, train_dataset=dataset, objective=objective_for("fim"),
                      pad_token_id=4, loss_impl="plain", data_collator=lambda rows: rows)


def test_the_training_loader_groups_by_length_in_transformers_order(tmp_path, monkeypatch: pytest.MonkeyPatch):
    trainer = _trainer(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2,
                       train_sampling_strategy="group_by_length")
    lengths = [len(r) for r in trainer.train_dataset["input_ids"]]
    original = datasets.Dataset.__getitem__
    monkeypatch.setattr(datasets.Dataset, "__getitem__", lambda self, key: (_ for _ in ()).throw(
        AssertionError("a row was read to learn its length")) if isinstance(key, int) else original(self, key))
    loader = trainer.get_train_dataloader()
    monkeypatch.setattr(datasets.Dataset, "__getitem__", original)
    sampler = loader.batch_sampler.sampler  # accelerate keeps the sampler inside its batch sampler
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == lengths
    torch.manual_seed(11)
    order = list(sampler)
    torch.manual_seed(11)  # transformers' sampler given the true lengths: the reference order
    assert order == list(LengthGroupedSampler(4, lengths=lengths))


def test_a_checkpoint_is_renamed_into_place_only_when_saved_whole(tmp_path):
    trainer = _trainer(tmp_path, save_total_limit=2)
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, AtomicCheckpointCallback))
    staging = Path(trainer.args.output_dir)
    checkpoints = staging.parent
    (staging / "checkpoint-9").mkdir(parents=True)  # a killed run's half checkpoint
    callback.on_train_begin(trainer.args, trainer.state, trainer.control)
    assert list(staging.iterdir()) == []
    for step in (1, 2, 3):
        trainer.state.global_step = step
        (staging / f"checkpoint-{step}").mkdir()
        (staging / f"checkpoint-{step}" / "trainer_state.json").write_text(str(step))
        assert not (checkpoints / f"checkpoint-{step}").exists()  # being written: not in place yet
        callback.on_save(trainer.args, trainer.state, trainer.control)
        assert (checkpoints / f"checkpoint-{step}" / "trainer_state.json").read_text() == str(step)
    assert sorted(p.name for p in checkpoints.iterdir()) == [".staging", "checkpoint-2", "checkpoint-3"]
    callback.on_train_end(trainer.args, trainer.state, trainer.control)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_with_another_output_dir_the_callback_touches_nothing(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.args.output_dir = str(tmp_path / "mine")  # a Sc2Trainer used outside a run folder
    (tmp_path / "mine" / "checkpoint-1").mkdir(parents=True)
    callback = next(c for c in trainer.callback_handler.callbacks if isinstance(c, AtomicCheckpointCallback))
    for hook in (callback.on_train_begin, callback.on_save, callback.on_train_end):
        hook(trainer.args, trainer.state, trainer.control)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["checkpoint-1"]
