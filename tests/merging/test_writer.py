"""Sharded safetensors written one tensor at a time (``sc2tune.merging.writer``), read back by safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sc2tune.errors import UserError
from sc2tune.merging.writer import OutTensor, ShardedWriter, parse_size, plan_shards


def test_sharded_writer_round_trips_through_safetensors(tmp_path: Path):
    torch.manual_seed(0)
    tensors = {"a": torch.randn(10, 7), "b": torch.randn(3).to(torch.bfloat16),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3), "d": torch.randn(40, 5).half()}
    plan = plan_shards([OutTensor(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], 300)
    assert [len(s) for s in plan] == [2, 1, 1]  # 280+6 | 48 | 400 bytes (a bigger tensor gets its own)
    writer = ShardedWriter(tmp_path, plan)
    for k, v in tensors.items():
        writer.write(k, v)
    files = writer.close()
    loaded: dict[str, torch.Tensor] = {}
    for f in files:
        loaded.update(load_file(f))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["d"] == "model-00003-of-00003.safetensors"
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == 3 * 2**29
    with pytest.raises(UserError):
        parse_size("two gigs")
