"""Write sharded safetensors one tensor at a time, with the shard layout fixed before any data.

A safetensors file is ``u64 little-endian header length | JSON header | tensor bytes``; the header maps
each name to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to the end of the
header; the header is padded with spaces to a multiple of 8 bytes). Because every output name, shape
and dtype is known before merging starts, the writer emits the header first and then streams each
tensor's bytes as it is produced: memory holds one tensor, never a shard.

Shards are named ``model-0000i-of-0000N.safetensors`` with a ``model.safetensors.index.json``
(``{"metadata": {"total_size": bytes}, "weight_map": {name: file}}``), or ``model.safetensors`` alone
when everything fits in one shard: the layout ``save_pretrained`` writes and ``from_pretrained`` reads.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

#: safetensors' dtype names (``SAFETENSORS_DTYPES`` of :mod:`~sc2tune.merging.checkpoint` reads them back).
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


@dataclass(frozen=True)
class OutTensor:
    """One tensor of the output checkpoint: its name, shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape)


def plan_shards(tensors: list[OutTensor], max_bytes: int) -> list[list[OutTensor]]:
    """Split the tensors, in order, into shards of at most ``max_bytes`` (a bigger tensor gets its own)."""
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return [s for s in shards if s]


def shard_names(count: int) -> list[str]:
    """File names ``save_pretrained`` uses for ``count`` shards."""
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


class ShardedWriter:
    """Stream tensors, in plan order, into the planned shards of ``folder``.

    Call :meth:`write` once per planned tensor, in order, then :meth:`close`, which writes the index.
    """

    def __init__(self, folder: Path, shards: list[list[OutTensor]]) -> None:
        self.folder = folder
        self.shards = shards
        self.names = shard_names(len(shards))
        self._order = [t for shard in shards for t in shard]
        self._pos = 0
        self._shard = -1
        self._left = 0
        self._file: BinaryIO | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sc2tune-writer")
        self._pending: Future[None] | None = None

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        self._shard += 1
        shard = self.shards[self._shard]
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in shard:
            header[t.name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                              "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)
        self._file = open(self.folder / self.names[self._shard], "wb")  # noqa: SIM115 - closed in close()
        self._file.write(struct.pack("<Q", len(blob)))
        self._file.write(blob)
        self._left = len(shard)

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append the next planned tensor (its name, shape and dtype must match the plan).

        The bytes are written by one background thread while the caller computes the next tensor;
        at most one write is pending, so memory holds at most two output tensors.
        """
        expected = self._order[self._pos]
        if (name, tuple(tensor.shape), tensor.dtype) != (expected.name, expected.shape, expected.dtype):
            raise RuntimeError(f"writer expected {expected} next, got {name} {tuple(tensor.shape)} {tensor.dtype}")
        data = tensor.detach().to("cpu").contiguous()
        self._drain()
        self._pending = self._pool.submit(self._emit, data)
        self._pos += 1

    def _emit(self, data: torch.Tensor) -> None:
        if self._left == 0:
            self._open_next()
        assert self._file is not None
        if data.numel():
            self._file.write(data.reshape(-1).view(torch.uint8).numpy().data)
        self._left -= 1

    def _drain(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()  # re-raises a failed write (disk full) in the caller

    def close(self) -> list[Path]:
        """Finish the last shard, write the index (several shards), return the files written."""
        self._drain()
        self._pool.shutdown()
        if self._pos != len(self._order):
            raise RuntimeError(f"writer closed after {self._pos} of {len(self._order)} tensors")
        if self._file is not None:
            self._file.close()  # flushes
            self._file = None
        files = [self.folder / n for n in self.names]
        if len(self.shards) > 1:
            weight_map = {t.name: self.names[i] for i, shard in enumerate(self.shards) for t in shard}
            index = {"metadata": {"total_size": sum(t.nbytes for t in self._order)}, "weight_map": weight_map}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return files

    def abort(self) -> None:
        """Stop after a failure and close the open file (the caller removes the folder)."""
        with contextlib.suppress(Exception):
            self._drain()
        self._pool.shutdown()
        if self._file is not None:
            self._file.close()
            self._file = None
