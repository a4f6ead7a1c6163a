"""Exports for other engines: GGUF (llama.cpp, Ollama, LM Studio) and GGUF-LoRA, and their verification.

The face is light (no torch, no gguf): :func:`export` (``sc2tune export``), :func:`export_gguf`,
:func:`export_gguf_lora`, :func:`verify_gguf`. The parts: ``weights`` (tensors from a model folder, or an
adapter merged on the fly), ``gguf_model`` (architecture, hyper-parameters, tensor names and types, the streamed
write), ``gguf_tokenizer`` (vocabulary, merges, special and FIM ids), ``gguf_lora`` (the adapter alone),
``quantize`` (llama.cpp's quantiser), ``verify`` (the file in llama.cpp against the training-side model).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ExportResult": "sc2tune.export.api",
    "export": "sc2tune.export.api",
    "export_gguf": "sc2tune.export.api",
    "export_gguf_lora": "sc2tune.export.api",
    "describe_export": "sc2tune.export.api",
    "verify_gguf": "sc2tune.export.verify",
    "verify_lora": "sc2tune.export.verify",
    "VerifyReport": "sc2tune.export.verify",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sc2tune.export' has no attribute {name!r}")
