"""Commands that make weights: ``train`` (a recipe to an adapter) and ``merge`` (an adapter into full weights)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from sc2tune.commands.options import JsonOutput, NoProgress, Overrides, RecipePath, TrustRemoteCode, load

if TYPE_CHECKING:
    from sc2tune.training import TrainResult

#: Exit status of a run stopped by SIGTERM after saving its checkpoint (128 + SIGTERM, as shells report it).
PREEMPTED_EXIT = 143


def train(
    recipe: RecipePath,
    overrides: Overrides = None,
    trust_remote_code: TrustRemoteCode = False,
    resume: Annotated[bool, typer.Option(
        "--resume", help="continue from the newest complete checkpoint in output_dir/checkpoints")] = False,
    no_progress: NoProgress = False,
    as_json: JsonOutput = False,
) -> None:
    """Fine-tune: sc2tune train RECIPE [key=value ...] [--resume].

    Under ``accelerate launch`` every process trains; only the main process prints the report. A run stopped
    by SIGTERM saves a checkpoint and exits with status 143 (continue it with ``--resume``).
    """
    from sc2tune.modeling import ensure_model_reachable

    loaded = load(recipe, overrides, trust_remote_code)
    ensure_model_reachable(loaded.model)  # before the training stack's imports: an unreachable hub fails at once
    from accelerate import PartialState

    from sc2tune.training import train as run_train

    result = run_train(loaded, resume=resume, show_progress=not no_progress)
    if PartialState().is_main_process:  # under accelerate launch, one report is enough
        print_train_report(result, as_json=as_json)
    if result.preempted:
        raise typer.Exit(PREEMPTED_EXIT)


def print_train_report(result: TrainResult, *, as_json: bool) -> None:
    """Steps, adapter folder and final eval metrics (or how to resume); the JSON summary last with ``as_json``."""
    from sc2tune.training.run import describe

    if result.preempted:
        print(f"preempted at step {result.global_step}: checkpoint saved in {result.output_dir}/checkpoints; "
              "run the same command with --resume to continue", file=sys.stderr)
    else:
        print(f"done: {result.global_step} steps; adapter in {result.adapter_dir}")
        for key, value in sorted(result.final_eval.items()):
            if isinstance(value, float) and "runtime" not in key and "per_second" not in key:
                print(f"  {key}: {value:.4f}")
        if result.train_tokens_per_second:
            print(f"  train tokens/s: {result.train_tokens_per_second:,.0f}")
    if as_json:
        print(json.dumps(describe(result)))


def merge(
    adapter_dir: Annotated[str, typer.Argument(
        metavar="ADAPTER_DIR", help="PEFT LoRA/QLoRA adapter folder (adapter_config.json)", show_default=False)],
    out: Annotated[str, typer.Option(metavar="OUT_DIR", help="folder to write (must not exist)",
                                     show_default=False)],
    base: Annotated[str | None, typer.Option(
        metavar="PATH_OR_ID", help="base model folder or hub id (default: the adapter's base_model_name_or_path)")
    ] = None,
    dtype: Annotated[Literal["bfloat16", "float16", "float32"] | None, typer.Option(
        help="output dtype (default: the base checkpoint's)")] = None,
    shard_size: Annotated[str, typer.Option(help="largest output shard, e.g. 2GB, 500MB")] = "2GB",
    merge_into: Annotated[Literal["quantized", "original"], typer.Option(
        help="QLoRA adapters: merge into the NF4 round trip they were trained against or into the original "
        "base weights")] = "quantized",
    qlora: Annotated[bool, typer.Option(
        "--qlora", help="treat the adapter as QLoRA (NF4, double quant) even without sc2tune's recipe.yaml")] = False,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="skip comparing merged and adapter logits (verification loads base + adapter)")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="replace OUT_DIR when it holds an earlier model output (any other folder is refused)")
    ] = False,
    no_progress: NoProgress = False,
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Fold an adapter into full weights: sc2tune merge ADAPTER_DIR --out OUT_DIR."""
    from sc2tune.merging import describe_merge
    from sc2tune.merging import merge as run_merge

    result = run_merge(adapter_dir, out, base=base, dtype=dtype, shard_size=shard_size, verify=not no_verify,
                       overwrite=overwrite, merge_into=merge_into, qlora=True if qlora else None,
                       progress=not no_progress, trust_remote_code=trust_remote_code)
    print(describe_merge(result))
