"""OpenAI's presence and frequency penalties as a transformers logits processor (transformers has neither).

For each row, with ``c[j]`` the number of times token ``j`` occurs among the tokens generated so far (the
prompt does not count)::

    logit[j] -= presence_penalty * (c[j] > 0) + frequency_penalty * c[j]

Positive values make a token less likely once generated (presence: once; frequency: per occurrence).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class PresenceFrequencyPenalty(LogitsProcessor):
    """``logit[j] -= presence * (c[j] > 0) + frequency * c[j]`` over the tokens after ``prompt_length``.

    Called by ``model.generate`` (``logits_processor=[...]``) with ``input_ids`` (rows x tokens so far, the
    prompt first) and ``scores`` (rows x vocabulary); returns new scores.
    """

    def __init__(self, prompt_length: int, presence: float = 0.0, frequency: float = 0.0) -> None:
        self.prompt_length = prompt_length
        self.presence = presence
        self.frequency = frequency

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.presence * (counts > 0).to(scores.dtype) - self.frequency * counts
