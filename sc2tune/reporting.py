"""Loss curves shared by training (``loss.png`` of every run) and evaluation reports.

``metrics.jsonl`` holds one JSON object per line: ``{"step", "loss", ...}`` for logged training steps and
``{"step", "eval_loss", ...}`` for evaluations; :func:`read_metrics` turns it into two ``(step, loss)``
series and :func:`plot_loss_curves` draws them (matplotlib, Agg backend: no display needed).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from sc2tune.errors import DataError


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_metrics(path: str | Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """``(train, eval)`` lists of ``(step, loss)`` from a metrics.jsonl with lines ``{step, loss}`` and
    ``{step, eval_loss}`` (other keys and non-finite values are ignored).

    A line that is not JSON, or whose ``step`` is not a whole number (``"abc"``, ``2.5``, ``true``, ``null``), is a
    :class:`DataError` naming the file and line: a training run writes only integer steps, so such a line was
    written by something else, and a curve drawn through it would be wrong."""
    train, evals = [], []
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or "step" not in row:
            continue
        step = _step(row["step"])
        if step is None:
            raise DataError(f"{path}:{number}: step is {json.dumps(row['step'])[:40]}, not a whole number",
                            hint="fix or delete that line (training writes whole-number steps only)")
        for key, target in (("loss", train), ("eval_loss", evals)):
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                target.append((step, float(value)))
    return train, evals


def _step(value: object) -> int | None:
    """``value`` as a step: an int, or a float with no fractional part (``3.0``); None for anything else
    (bools, strings, fractions, non-finite numbers, null)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def plot_loss_curves(train: Sequence[tuple[int, float]], evals: Sequence[tuple[int, float]], path: Path,
                     title: str = "loss") -> Path:
    """Training loss (line) and eval loss (line with markers) against optimizer step."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", color="#3b75af")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval loss", color="#d9653b")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if train or evals:
        ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
