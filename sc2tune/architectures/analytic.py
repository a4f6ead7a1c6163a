"""``analytic_layout``: a config.json's module tree for the architectures sc2tune transcribed, by ``model_type``.

A config the transcription does not cover (remote code, another rope type, cross-attention, a value of the
wrong type, GPTBigCode's ``hidden_size``-style aliases) returns None from :func:`analytic_layout`, and the
caller builds the meta model instead, so the answers stay transformers' own.
"""

from __future__ import annotations

from typing import Any

from sc2tune.architectures.gpt_bigcode import _gpt_bigcode
from sc2tune.architectures.layout import ModelLayout
from sc2tune.architectures.starcoder2 import _starcoder2


def analytic_layout(data: dict[str, Any], *, head: str = "causal-lm", num_labels: int = 2) -> ModelLayout | None:
    """The layout of a config.json (as a dict) for ``starcoder2`` and ``gpt_bigcode``.

    None when the architecture is another one or the config is outside what the transcription covers
    (the caller then builds the meta model).
    """
    model_type = data.get("model_type")
    if "auto_map" in data:  # the model's own code decides its modules
        return None
    if head not in ("causal-lm", "sequence-classification") or not isinstance(num_labels, int) or num_labels < 1:
        return None
    if model_type == "starcoder2":
        return _starcoder2(data, head, num_labels)
    if model_type == "gpt_bigcode":
        return _gpt_bigcode(data, head, num_labels)
    return None
