"""Sharded safetensors written one tensor at a time (``sc2tune.merging.writer``): read back by safetensors,
byte by byte against the format, and the index ``from_pretrained`` reads."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from sc2tune.errors import UserError
from sc2tune.merging.writer import OutTensor, ShardedWriter, plan_shards
from sc2tune.sizes import parse_size


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


def test_one_shard_is_a_plain_model_safetensors_laid_out_as_the_format_says(tmp_path: Path):
    """``u64 header length | JSON header (padded to 8 bytes) | data``, offsets relative to the data, no index."""
    tensors = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2, 3], dtype=torch.int8)}
    writer = ShardedWriter(tmp_path, plan_shards([OutTensor(k, tuple(v.shape), v.dtype) for k, v in tensors.items()],
                                                 10**6))
    for k, v in tensors.items():
        writer.write(k, v)
    assert writer.close() == [tmp_path / "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    raw = (tmp_path / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + length])
    assert length % 8 == 0 and header["__metadata__"] == {"format": "pt"}
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["b"] == {"dtype": "I8", "shape": [3], "data_offsets": [24, 27]}
    assert len(raw) == 8 + length + 27
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
        assert all(torch.equal(handle.get_tensor(k), v) for k, v in tensors.items())


def test_index_names_every_tensor_and_the_total_size(tmp_path: Path):
    """40 + 40 bytes fit a shard of 80, the next 40 start a second one; total 120 bytes."""
    out = [OutTensor("a", (10,), torch.float32), OutTensor("b", (20,), torch.float16), OutTensor("c", (5,), torch.float64)]
    writer = ShardedWriter(tmp_path, plan_shards(out, 80))
    for t in out:
        writer.write(t.name, torch.ones(t.shape, dtype=t.dtype))
    files = writer.close()
    assert [f.name for f in files] == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index == {"metadata": {"total_size": 120},
                     "weight_map": {"a": files[0].name, "b": files[0].name, "c": files[1].name}}


def test_writes_must_follow_the_plan(tmp_path: Path):
    writer = ShardedWriter(tmp_path, plan_shards([OutTensor("a", (2,), torch.float32),
                                                  OutTensor("b", (2,), torch.float32)], 100))
    with pytest.raises(RuntimeError, match="expected"):
        writer.write("b", torch.ones(2))  # out of order
    with pytest.raises(RuntimeError, match="expected"):
        writer.write("a", torch.ones(2, dtype=torch.float16))  # another dtype than planned
    writer.write("a", torch.ones(2))
    with pytest.raises(RuntimeError, match="closed after 1 of 2 tensors"):
        writer.close()
    writer.abort()
