"""The streaming pass: read one base tensor, merge it, write it, forget it.

For each planned output tensor::

    W   = adapter replacement if any, else the base tensor (read alone from its shard)
    W'  = dequant(quant(W))            if the plan asks for the QLoRA round trip
    out = round_to_dtype(float32(W') + scale * B @ A)     # one rounding, after the fp32 sum
    DoRA:  out = round_to_dtype(m / ||W' + s B A|| * (W' + s B A))   # norm per output feature, fp32

Tensors without an update are only cast. One thread reads the next base tensor and another writes
the previous output while the current one is merged, so disk and arithmetic overlap. Peak memory is a
few tensors (the largest one in float32 plus the neighbours in flight) and the adapter, whatever the
model size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
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
        work = nf4_round_trip(weight, plan.quant, plan.quant_dtype).to(torch.float32)
    else:
        work = weight.to(torch.float32, copy=True)
    if src.lora is not None:
        src.lora.apply_to(work)
    return work.to(src.out.dtype)


def merged_tensors(plan: MergePlan, adapter: Adapter, ckpt: BaseCheckpoint
                   ) -> Iterator[tuple[Source, torch.Tensor | None, torch.Tensor]]:
    """(plan entry, its base tensor or None, the output tensor) for every planned tensor, in plan order; one
    thread reads the next base tensor while the current one is merged."""
    keys = [s.base_key for s in plan.sources]
    # base tensors to read, in order (an entry that reuses the previous entry's tensor reads nothing)
    reads = [i for i, k in enumerate(keys) if k is not None and (i == 0 or keys[i - 1] != k)]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc2tune-reader")
    ahead: dict[int, Future[torch.Tensor]] = {}

    def read_ahead() -> None:  # keep one base tensor in flight while the current one is merged
        if reads:
            i = reads.pop(0)
            ahead[i] = pool.submit(ckpt.read, keys[i])  # type: ignore[arg-type]

    try:
        read_ahead()
        base: torch.Tensor | None = None
        for i, src in enumerate(plan.sources):
            if src.base_key is None:
                base = None
            elif i in ahead:
                base = ahead.pop(i).result()
                read_ahead()
            yield src, base, merge_tensor(src, base, adapter, plan)
            if i + 1 == len(keys) or keys[i + 1] != src.base_key:
                base = None  # the next entry does not reuse it (only an untied lm_head does)
    finally:
        pool.shutdown(cancel_futures=True)


def stream_merge(plan: MergePlan, adapter: Adapter, ckpt: BaseCheckpoint, folder: Path, *,
                 shard_bytes: int, progress: bool = True) -> StreamStats:
    """Write the merged weights of ``plan`` into ``folder`` as sharded safetensors."""
    writer = ShardedWriter(folder, plan_shards([s.out for s in plan.sources], shard_bytes))
    total = sum(s.out.nbytes for s in plan.sources)
    lora = replaced = trips = changed = 0
    bar = Progress(TextColumn("merging {task.description}"), BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), transient=True, disable=not progress)
    try:
        with bar, closing(merged_tensors(plan, adapter, ckpt)) as tensors:
            task = bar.add_task("", total=total)
            for src, base, out in tensors:
                bar.update(task, description=src.out.name)
                lora += src.lora is not None
                replaced += src.replace is not None
                trips += src.round_trip
                if src.lora is not None or src.replace is not None:
                    changed += base is None or not torch.equal(out, base.to(out.dtype))
                writer.write(src.out.name, out)
                del out
                bar.advance(task, src.out.nbytes)
        files = writer.close()
    except BaseException:
        writer.abort()
        raise
    log.debug("wrote %d tensors into %d shard(s)", len(plan.sources), len(files))
    return StreamStats(len(plan.sources), lora, replaced, trips, changed, len(files), total)
