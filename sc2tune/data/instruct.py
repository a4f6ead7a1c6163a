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

from typing import Any

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from sc2tune.data.packing import IGNORE, TokenSeqs
from sc2tune.data.sources import Records
from sc2tune.data.stats import SplitStats
from sc2tune.data.templates import Template


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


class _Tokenize:
    """The batched ``datasets.map`` function (a class so it pickles for num_proc > 1)."""

    def __init__(self, template: Template, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 train_on_prompt: bool) -> None:
        self.template, self.tokenizer = template, tokenizer
        self.max_length, self.train_on_prompt = max_length, train_on_prompt
        self.eos = int(tokenizer.eos_token_id)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        keys = list(batch)
        rows = [dict(zip(keys, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        prompts = _encode(self.tokenizer, [self.template.render_prompt(r) for r in rows])
        responses = _encode(self.tokenizer, [self.template.render_response(r) for r in rows])
        out: dict[str, list[Any]] = {"input_ids": [], "labels": [], "_cut": [], "_keep": []}
        for p, r in zip(prompts, responses, strict=True):
            ids = p + r + [self.eos]
            labels = (p if self.train_on_prompt else [IGNORE] * len(p)) + r + [self.eos]
            cut = max(0, len(ids) - self.max_length)
            out["input_ids"].append(ids[: self.max_length])
            out["labels"].append(labels[: self.max_length])
            out["_cut"].append(cut)
            out["_keep"].append(len(p) < self.max_length)
        return out


def tokenize_instruct(records: Records, template: Template, tokenizer: PreTrainedTokenizerBase, *,
                      max_length: int, train_on_prompt: bool) -> tuple[TokenSeqs, SplitStats]:
    """Token sequences for instruction records (see module doc) and their counts."""
    ds = datasets.Dataset.from_dict(records.columns)
    fn = _Tokenize(template, tokenizer, max_length, train_on_prompt)
    mapped = ds.map(fn, batched=True, batch_size=1000, remove_columns=ds.column_names, load_from_cache_file=False)
    table = mapped.data.table
    keep = table.column("_keep").to_numpy(zero_copy_only=False).astype(bool)
    cut = table.column("_cut").to_numpy(zero_copy_only=False).astype(np.int64)
    seqs = TokenSeqs.from_dataset(mapped)
    stats = SplitStats(examples=int(keep.sum()), truncated=int((cut[keep] > 0).sum()),
                       dropped_examples=int((~keep).sum()))
    dropped = int(cut[keep].sum()) + int((seqs.lengths[~keep] + cut[~keep]).sum())
    if not keep.all():
        idx = np.flatnonzero(keep)
        ids = [seqs.ids[seqs.offsets[i]:seqs.offsets[i + 1]] for i in idx]
        labels = [seqs.labels[seqs.offsets[i]:seqs.offsets[i + 1]] for i in idx]
        seqs = TokenSeqs.from_lists(ids, labels)
    stats.dropped_tokens = dropped
    stats.windows = len(seqs)
    return seqs, stats
