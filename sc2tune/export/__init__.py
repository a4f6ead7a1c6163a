"""Exports for other engines: GGUF (llama.cpp, Ollama, LM Studio) and GGUF-LoRA, and their verification.

The face is light (no torch, no gguf): :func:`export` (``sc2tune export``), :func:`export_gguf`,
:func:`export_gguf_lora`, :func:`verify_gguf`. The parts: ``weights`` (tensors from a model folder, or an
adapter merged on the fly), ``gguf_model`` (architecture, hyper-parameters, tensor names and types, the streamed
write), ``gguf_tokenizer`` (vocabulary, merges, special and FIM ids), ``gguf_lora`` (the adapter alone),
``quantize`` (llama.cpp's quantiser), ``verify`` (the file in llama.cpp against the training-side model).
"""

from sc2tune.export.api import ExportResult, describe_export, export, export_gguf, export_gguf_lora
from sc2tune.export.verify import VerifyReport, verify_gguf, verify_lora

__all__ = ["ExportResult", "VerifyReport", "describe_export", "export", "export_gguf", "export_gguf_lora",
           "verify_gguf", "verify_lora"]
