"""The streaming pass: read one base tensor, merge it, write it, forget it.

For each planned output tensor::

    W   = adapter replacement if any, else the base tensor (read alone from its shard)
    W'  = dequant(quant(W))            if the plan asks for the QLoRA round trip
    out = round_to_dtype(float32(W') + scale * B @ A)     # one rounding, after the fp32 sum

Tensors without an update are only cast. Peak memory is about the largest tensor in float32 (plus
its update) and the adapter, whatever the model size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from sc2tune.merging.adapter import Adapter
from sc2tune.merging.checkpoint import BaseCheckpoint
from sc2tune.merging.plan import MergePlan, Source
from sc2tune.merging.quant import nf4_round_trip
from sc2tune.merging.writer import ShardedWriter, plan_shards

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamStats:
    """What the streaming pass did."""

    tensors: int
    lora_merged: int
    replaced: int
    round_trips: int
    changed: int  # output tensors that differ from the base tensor (new tensors count as changed)
    shards: int
    bytes_written: int


def merge_tensor(src: Source, base: torch.Tensor | None, adapter: Adapter, plan: MergePlan) -> torch.Tensor:
    """The output tensor for one plan entry (see the module docstring for the formula)."""
    weight = adapter.full[src.replace] if src.replace else base
    assert weight is not None
    if not (src.lora or src.round_trip):
        return weight.to(src.out.dtype)
    if src.round_trip:
        assert plan.quant is not None
        work = nf4_round_trip(weight, plan.quant).to(torch.float32)
    else:
        work = weight.to(torch.float32, copy=True)
    if src.lora is not None:
        work.add_(src.lora.delta())
    return work.to(src.out.dtype)


def stream_merge(plan: MergePlan, adapter: Adapter, ckpt: BaseCheckpoint, folder: Path, *,
                 shard_bytes: int, progress: bool = True) -> StreamStats:
    """Write the merged weights of ``plan`` into ``folder`` as sharded safetensors."""
    shards = plan_shards([s.out for s in plan.sources], shard_bytes)
    writer = ShardedWriter(folder, shards)
    total = sum(s.out.nbytes for s in plan.sources)
    cached: tuple[str | None, torch.Tensor | None] = (None, None)
    lora = replaced = trips = changed = 0
    bar = Progress(TextColumn("merging {task.description}"), BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True, disable=not progress)
    try:
        with bar:
            task = bar.add_task("", total=total)
            for i, src in enumerate(plan.sources):
                bar.update(task, description=src.out.name)
                base = None
                if src.base_key is not None:
                    base = cached[1] if cached[0] == src.base_key else ckpt.read(src.base_key)
                # keep the base tensor only when the next entry reads it too (an untied lm_head)
                following = plan.sources[i + 1].base_key if i + 1 < len(plan.sources) else None
                cached = (src.base_key, base) if following == src.base_key else (None, None)
                out = merge_tensor(src, base, adapter, plan)
                lora += src.lora is not None
                replaced += src.replace is not None
                trips += src.round_trip
                if src.lora is not None or src.replace is not None:
                    changed += base is None or not torch.equal(out, base.to(out.dtype))
                writer.write(src.out.name, out)
                del out, base
                bar.advance(task, src.out.nbytes)
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    log.debug("wrote %d tensors into %d shard(s)", len(plan.sources), len(files))
    return StreamStats(len(plan.sources), lora, replaced, trips, changed, len(files), total)
