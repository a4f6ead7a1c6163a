"""Held-out loss / perplexity (causal tasks) and predictions (classification) over a tokenized eval set.

Causal LM: position ``t`` predicts ``labels[t + 1]``; only targets ``!= -100`` count. Over the whole
set::

    loss = sum_i CE(logits_i, y_i) / N        perplexity = exp(loss)

(token-weighted, so a long document weighs more than a short one; N = number of trained targets). The
output layer and its cross-entropy run in chunks (:mod:`sc2tune.training.loss`) so no
``batch x length x vocab`` logits are built. Batches come from the recipe's own collator (padded, or
packed with restarting ``position_ids``), exactly what training evaluated on.

Classification: the predicted class is ``argmax`` of the head's logits for each row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F  # noqa: N812
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sc2tune.training.loss import linear_cross_entropy_sum, output_layer, shifted_trained_positions


def _batches(model: torch.nn.Module, dataset, collator: Callable, batch_size: int, max_examples: int | None,
             label: str, show_progress: bool) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """``(inputs, labels)`` of the first ``max_examples`` rows, collated and on the model's device (the model in
    eval mode), under a progress bar."""
    model.eval()
    device = next(model.parameters()).device
    count = len(dataset) if max_examples is None else min(len(dataset), max_examples)
    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not show_progress, transient=True) as progress:
        bar = progress.add_task(label, total=count)
        for start in range(0, count, batch_size):
            batch = collator([dataset[i] for i in range(start, min(count, start + batch_size))])
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            labels = batch.pop("labels")
            yield batch, labels
            progress.advance(bar, labels.shape[0])


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, dataset, collator: Callable, *, batch_size: int = 4,
                 max_examples: int | None = None, chunk_size: int = 1024, show_progress: bool = False
                 ) -> dict[str, float]:
    """Token-weighted mean cross-entropy and perplexity of ``model`` on ``dataset`` (see module doc).

    Returns ``{"loss", "perplexity", "tokens"}``; ``tokens`` is the number of scored targets.
    """
    # the output layer of the transformers causal LM (inside a PEFT wrapper, or the model itself)
    head = output_layer(model.get_base_model() if hasattr(model, "get_base_model") else model)
    total, count = 0.0, 0
    for batch, labels in _batches(model, dataset, collator, batch_size, max_examples, "held-out loss", show_progress):
        if head is not None:
            out = model(**batch, output_hidden_states=True, logits_to_keep=1, use_cache=False)
            hidden, targets = shifted_trained_positions(out.hidden_states[-1], labels)
            loss_sum = linear_cross_entropy_sum(hidden, head.weight, head.bias, targets, chunk_size)
        else:  # wrapped or quantised output layer: plain logits
            logits = model(**batch, use_cache=False).logits[:, :-1].float()
            targets = labels[:, 1:]
            loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                       ignore_index=-100, reduction="sum")
            targets = targets[targets != -100]
        total += float(loss_sum)
        count += int(targets.numel())
    if count == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "tokens": 0}
    loss = total / count
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}


@torch.no_grad()
def classify_predictions(model: torch.nn.Module, dataset, collator: Callable, *, batch_size: int = 8,
                         max_examples: int | None = None, show_progress: bool = False
                         ) -> tuple[list[int], list[int], float]:
    """``(true ids, predicted ids, mean cross-entropy)`` of a sequence-classification model."""
    y_true: list[int] = []
    y_pred: list[int] = []
    loss_sum = 0.0
    for batch, labels in _batches(model, dataset, collator, batch_size, max_examples, "classifying", show_progress):
        logits = model(**batch).logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        y_true += labels.tolist()
        y_pred += logits.argmax(-1).tolist()
    return y_true, y_pred, (loss_sum / len(y_true) if y_true else float("nan"))
