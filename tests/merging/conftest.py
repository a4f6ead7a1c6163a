"""Bases and adapters shared by the merge tests, built once per session (see ``merge_helpers``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from sc2tune.modeling import resolve_model_path

from .merge_helpers import load_base, peft_adapter, synthetic_base

warnings.filterwarnings("ignore")


@pytest.fixture(scope="session")
def tied_base() -> Path:
    """The built-in tiny StarCoder2 (tied embeddings, bundled tokenizer), as a folder."""
    return Path(resolve_model_path("sc2tune/tiny-starcoder2"))


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random StarCoder2 in float32 shards (vocabulary 512, no tokenizer)."""
    return synthetic_base(tmp_path_factory.mktemp("base") / "base", dtype=torch.float32)


@pytest.fixture(scope="session")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PEFT LoRA adapter with random factors on every linear of ``base``."""
    return peft_adapter(base, tmp_path_factory.mktemp("adapter") / "adapter")


@pytest.fixture(scope="session")
def untied_fp32_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``base`` with an output layer of its own (``lm_head.weight`` stored, a Linear left unquantised)."""
    return synthetic_base(tmp_path_factory.mktemp("untied") / "base", dtype=torch.float32, tied=False)


@pytest.fixture(scope="session")
def nf4_model(untied_fp32_base: Path) -> torch.nn.Module:
    """``untied_fp32_base`` as QLoRA trains on it: transformers' 4-bit load through bitsandbytes (NF4, double
    quant)."""
    return load_base(untied_fp32_base, quantized=True)
