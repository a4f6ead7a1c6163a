"""Instruction examples: template -> prompt and response token ids -> labels.

For each record, with P = tokens(prompt) and R = tokens(response) tokenised SEPARATELY (so the loss
boundary is exact, and matches generation, where the prompt is tokenised alone):

    input_ids = P + R + [eos]
    labels    = [-100] * len(P) + R + [eos]        ([-100] + (P + R + [eos])[1:] with data.train_on_prompt:
                                                    a sequence's first token is never a target, see
                                                    sc2tune.data.packing)

An example longer than ``max_length`` keeps its first ``max_length`` tokens (its end is cut: counted
in ``truncated`` and ``dropped_tokens``). An example whose prompt alone leaves no room for a response
token is dropped (``dropped_examples``). Text such as ``<|endoftext|>`` inside a record is tokenised as
text, never as the special token.
"""

from __future__ import annotations

import numpy as np
from transformers import PreTrainedTokenizerBase

from sc2tune.data.packing import IGNORE, TokenSeqs
from sc2tune.data.sources import Records
from sc2tune.data.stats import SplitStats
from sc2tune.data.templates import Template
from sc2tune.tokens import encode_texts


def tokenize_instruct(records: Records, template: Template, tokenizer: PreTrainedTokenizerBase, *,
                      max_length: int, train_on_prompt: bool) -> tuple[TokenSeqs, SplitStats]:
    """Token sequences for instruction records (see module doc) and their counts."""
    rows = [dict(zip(records.columns, values, strict=True)) for values in zip(*records.columns.values(), strict=True)]
    prompts = encode_texts(tokenizer, [template.render_prompt(r) for r in rows])
    responses = encode_texts(tokenizer, [template.render_response(r) for r in rows])
    eos = int(tokenizer.eos_token_id)
    stats = SplitStats()
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for p, r in zip(prompts, responses, strict=True):
        sequence = p + r + [eos]
        if len(p) >= max_length:  # no room for a response token: dropped whole
            stats.dropped_examples += 1
            stats.dropped_tokens += len(sequence)
            continue
        cut = max(0, len(sequence) - max_length)
        stats.truncated += int(cut > 0)
        stats.dropped_tokens += cut
        ids.append(np.asarray(sequence[:max_length], dtype=np.int32))
        trained = (p if train_on_prompt else [IGNORE] * len(p)) + r + [eos]
        labels.append(np.asarray(trained[:max_length], dtype=np.int32))
    seqs = TokenSeqs.from_lists(ids, labels)
    stats.examples = stats.windows = len(seqs)
    stats.tokens, stats.trained_tokens = len(seqs.ids), int((seqs.labels != IGNORE).sum())
    return seqs, stats
