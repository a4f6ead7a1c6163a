"""In-training ``eval_loss``: the per-token mean over the whole eval set, whatever the eval batch size or
the number of processes.

Reference: the model run on each row alone (no padding, no batching) and plain ``F.cross_entropy`` summed
over the trained targets, divided by their number.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

ROWS = 7  # not a multiple of 3 (nor of 2 x 2 processes): the last batch is short or repeats rows
LABELS = ["a", "b"]


def eval_rows() -> list[dict]:
    """Rows of very different lengths and trained-token counts (a masked prompt, then a trained part)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for i in range(ROWS):
        length = 4 + 9 * i % 37
        ids = torch.randint(40, 4000, (length,), generator=generator).tolist()
        prompt = length // (2 + i % 3)
        rows.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:], "class": i % 2})
    return rows


def trainer_for(rows: list[dict], eval_batch_size: int, loss_impl: str, output_dir: str, *,
                classify: bool = False, class_weights: torch.Tensor | None = None):
    import datasets
    from transformers import TrainingArguments

    from sc2tune.data.collate import CausalCollator, ClassifyCollator
    from sc2tune.modeling import ModelSource, load_model, objective_for
    from sc2tune.training.trainer import Sc2Trainer

    torch.manual_seed(0)
    if classify:
        model = load_model(ModelSource(dtype="float32", head="sequence-classification", labels=dict(enumerate(LABELS))),
                           pad_token_id=4)
        table = [{"input_ids": r["input_ids"], "labels": r["class"]} for r in rows]
        collator = ClassifyCollator(pad_id=4)
    else:
        model = load_model(ModelSource(dtype="float32"), pad_token_id=4)
        table = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
        collator = CausalCollator(pad_id=4)
    args = TrainingArguments(output_dir=output_dir, per_device_eval_batch_size=eval_batch_size, report_to="none",
                             use_cpu=True, remove_unused_columns=False, label_names=["labels"],
                             prediction_loss_only=not classify, average_tokens_across_devices=True)
    return Sc2Trainer(model=model, args=args, eval_dataset=datasets.Dataset.from_list(table),
                      data_collator=collator, objective=objective_for("classify" if classify else "fim"),
                      pad_token_id=4, loss_impl=loss_impl, class_weights=class_weights)


def per_token_mean(model: torch.nn.Module, rows: list[dict]) -> float:
    """sum of every trained target's cross-entropy / number of trained targets, one row at a time."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0, :-1].float()
            targets = torch.tensor(row["labels"][1:])
            total += float(F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum"))
            count += int((targets != -100).sum())
    return total / count


@pytest.mark.parametrize("loss_impl", ["chunked", "plain"])
def test_eval_loss_is_the_per_token_mean_for_any_eval_batch_size(tmp_path: Path, loss_impl: str):
    rows = eval_rows()
    by_batch = {size: trainer_for(rows, size, loss_impl, str(tmp_path))
                for size in (1, 3)}
    losses = {size: trainer.evaluate()["eval_loss"] for size, trainer in by_batch.items()}
    expected = per_token_mean(by_batch[1].model, rows)
    assert losses[1] == pytest.approx(expected, abs=1e-5)
    assert losses[3] == pytest.approx(expected, abs=1e-5)


def test_classification_eval_loss_is_the_weighted_mean_over_the_set(tmp_path: Path):
    rows = eval_rows()
    weights = torch.tensor([1.0, 3.0])
    trainers = {size: trainer_for(rows, size, "chunked", str(tmp_path), classify=True, class_weights=weights)
                for size in (1, 3)}
    model = trainers[1].model.eval()
    terms = []
    with torch.no_grad():  # one row at a time: sum_i w_{y_i} CE_i / sum_i w_{y_i}
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits.float()
            weight = float(weights[row["class"]])
            terms.append((weight * float(F.cross_entropy(logits, torch.tensor([row["class"]]))), weight))
    expected = sum(t for t, _ in terms) / sum(w for _, w in terms)
    for trainer in trainers.values():
        assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_eval_loss_is_the_same_on_two_processes(tmp_path: Path):
    """accelerate launch --multi_gpu --num_processes 2 on CPU (gloo): 7 rows, eval batch 2 per process, so the
    last step repeats rows to keep the processes even; the figure is still the one-process per-token mean."""
    # imported here: this file is also the launched script, which runs without tests/ on its path
    from launching import accelerate_command, run_ok

    rows = eval_rows()
    single = trainer_for(rows, 1, "chunked", str(tmp_path / "one"))
    expected = per_token_mean(single.model, rows)
    out = tmp_path / "two.json"
    run_ok(accelerate_command(__file__, str(tmp_path / "two"), str(out)))
    assert json.loads(out.read_text())["eval_loss"] == pytest.approx(expected, abs=1e-5)


if __name__ == "__main__":  # one process of the two-process test
    trainer = trainer_for(eval_rows(), 2, "chunked", sys.argv[1])
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():
        Path(sys.argv[2]).write_text(json.dumps(metrics))
    trainer.accelerator.wait_for_everyone()
    # gloo's threads outliving the interpreter abort it at exit ("terminate called without an active exception",
    # seen once in CI): end the process group before exiting
    torch.distributed.destroy_process_group()
