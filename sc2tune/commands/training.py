"""Commands that make weights: ``train`` (a recipe to an adapter) and ``merge`` (an adapter into full weights).

Their options are the parameters of :func:`sc2tune.training.train` and :func:`sc2tune.merging.merge`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from typing import TYPE_CHECKING

import typer

from sc2tune.commands.derive import Command
from sc2tune.commands.options import JsonOutput

if TYPE_CHECKING:
    from sc2tune.merging import MergeResult
    from sc2tune.training.run import TrainResult

#: Exit status of a run stopped by SIGTERM after saving its checkpoint (128 + SIGTERM, as shells report it).
PREEMPTED_EXIT = 143


def show_train(result: TrainResult, as_json: JsonOutput = False) -> None:
    """Fine-tune: sc2tune train RECIPE [key=value ...] [--resume].

    Under ``accelerate launch`` every process trains; only the main process prints the report. A run stopped
    by SIGTERM saves a checkpoint and exits with status 143 (continue it with ``--resume``).
    """
    from accelerate import PartialState

    main = PartialState().is_main_process  # under accelerate launch, one report is enough
    if main and result.preempted:
        print(f"preempted at step {result.global_step}: checkpoint saved in {result.output_dir}/checkpoints; "
              "run the same command with --resume to continue", file=sys.stderr)
    elif main:  # steps, adapter folder and final eval metrics
        print(f"done: {result.global_step} steps; adapter in {result.adapter_dir}")
        for key, value in sorted(result.final_eval.items()):
            if isinstance(value, float) and "runtime" not in key and "per_second" not in key:
                print(f"  {key}: {value:.4f}")
        if result.train_tokens_per_second:
            print(f"  train tokens/s: {result.train_tokens_per_second:,.0f}")
    if main and as_json:  # the JSON summary last: every field but the model, paths as strings
        print(json.dumps({f.name: getattr(result, f.name) for f in fields(result) if f.name != "model"}, default=str))
    if result.preempted:
        raise typer.Exit(PREEMPTED_EXIT)


def show_merge(result: MergeResult) -> None:
    """Fold an adapter into full weights: sc2tune merge ADAPTER_DIR --out OUT_DIR."""
    from sc2tune.merging import describe_merge

    print(describe_merge(result))


train = Command(show_train, api="sc2tune.training:train")
merge = Command(show_merge, api="sc2tune.merging:merge")
