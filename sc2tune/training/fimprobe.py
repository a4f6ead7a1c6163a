"""In-training FIM quality (``train.eval_fim: N``): N held-out line holes filled greedily at every evaluation,
their exact match and edit similarity logged beside ``eval_loss``.

The holes are drawn once, when training starts, from the run's eval split (held-out documents, recovered
from the prepared eval rows by :func:`sc2tune.data.holes.recover_documents`), so every evaluation fills
the same holes::

    candidates = every line hole of every held-out document (sc2tune.data.holes.line_cuts, lines of at
                 least MIN_LINE_CHARS non-blank characters), in document and line order
    chosen     = random.Random(f"{train.seed}:eval_fim").sample(candidates, min(N, len(candidates)))

A hole is ``prefix | middle | suffix`` with ``middle = "\\n" + indentation + L`` cut on token boundaries (the
quickstart's cut). The prompt is the order the run trains most (``data.fim.spm_rate`` above 0.5: SPM, else
PSM), plain (no repository header)::

    PSM  <fim_prefix>PREFIX<fim_suffix>SUFFIX<fim_middle>
    SPM  <fim_prefix><fim_suffix>SUFFIX<fim_middle>PREFIX

with the suffix cut to a quarter of the budget from the right when the prefix needs the rest, the prefix cut
from the left, and ``budget = data.max_length - max_new_tokens - 3``. Decoding is greedy, in batches
(:func:`sc2tune.decoding.generate_batch`), stopped at ``<|endoftext|>`` / ``<file_sep>`` or after
``max_new_tokens = max over the holes of tokens(middle) + 4``; the prediction is the first line of the
generated text (:func:`sc2tune.data.holes.first_line`), and over the holes::

    fim_exact_match     = mean(prediction.strip() == L.strip())        (sc2tune.metrics.exact_match)
    fim_edit_similarity = mean(1 - lev(prediction, L) / max(len))      (sc2tune.metrics.edit_similarity)
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sc2tune.data.holes import first_line, line_cuts, recover_documents
from sc2tune.metrics import text_scores
from sc2tune.recipe import Recipe
from sc2tune.tokens import encode_texts, special_tokens

#: A line is a hole candidate when it has at least this many non-blank characters (the quickstart's rule).
MIN_LINE_CHARS = 8
#: Documents read back from the eval rows to draw the holes from.
MAX_DOCUMENTS = 1000
#: Prompts generated together.
BATCH_SIZE = 16


@dataclass(frozen=True)
class FimProbe:
    """The held-out holes of one run, as prompts (module doc): ``prompts[i]`` is filled and compared with
    ``lines[i]``."""

    prompts: tuple[tuple[int, ...], ...]
    lines: tuple[str, ...]  # L, stripped
    max_new_tokens: int
    pad_id: int
    stop_ids: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.prompts)

    def scores(self, predictions: Sequence[str]) -> dict[str, float]:
        """``{"fim_exact_match", "fim_edit_similarity"}``: the means over the holes (module doc)."""
        if not self.lines:
            raise ValueError("no holes to score")
        scores = text_scores(predictions, self.lines)  # the two means (a length mismatch is a ValueError)
        return {"fim_exact_match": scores["exact_match"], "fim_edit_similarity": scores["edit_similarity"]}


def draw_holes(documents: Sequence[str], count: int, seed: int) -> list[tuple[int, int, int]]:
    """``(document, a, b)`` of ``count`` holes drawn as the module doc says, in candidate order."""
    candidates = [(d, a, b) for d, text in enumerate(documents) for a, b in line_cuts(text, MIN_LINE_CHARS)]
    chosen = random.Random(f"{seed}:eval_fim").sample(range(len(candidates)), min(count, len(candidates)))
    return [candidates[i] for i in sorted(chosen)]


def prompt_ids(tokenizer: Any, prefix: str, suffix: str, budget: int, *, spm: bool) -> list[int]:
    """The PSM or SPM prompt of one hole with at most ``budget`` prefix + suffix tokens (module doc)."""
    st = special_tokens(tokenizer, need_fim=True)
    pre, suf = encode_texts(tokenizer, [prefix, suffix])
    keep_suf = min(len(suf), max(budget // 4, budget - len(pre)))
    keep_pre = min(len(pre), budget - keep_suf)
    pre, suf = pre[len(pre) - keep_pre:] if keep_pre > 0 else [], suf[:keep_suf]
    if spm:
        return [st.fim_prefix, st.fim_suffix, *suf, st.fim_middle, *pre]
    return [st.fim_prefix, *pre, st.fim_suffix, *suf, st.fim_middle]


def build_probe(recipe: Recipe, eval_rows: Any, tokenizer: Any) -> FimProbe | None:
    """The probe of a FIM run with ``train.eval_fim > 0`` and an eval split (None otherwise, or when the
    held-out documents hold no line hole)."""
    count = recipe.eval_fim_holes
    if recipe.task != "fim" or count <= 0 or eval_rows is None or len(eval_rows) == 0:
        return None
    documents = recover_documents(eval_rows, tokenizer, limit=MAX_DOCUMENTS)
    holes = draw_holes(documents, count, recipe.train.seed)
    if not holes:
        return None
    max_new_tokens = max(len(ids) for ids in encode_texts(tokenizer, [documents[d][a:b] for d, a, b in holes])) + 4
    budget = max(8, recipe.data.max_length - max_new_tokens - 3)
    spm = recipe.data.fim.spm_rate > 0.5
    st = special_tokens(tokenizer, need_fim=True)
    prompts = tuple(tuple(prompt_ids(tokenizer, documents[d][:a], documents[d][b:], budget, spm=spm))
                    for d, a, b in holes)
    lines = tuple(documents[d][a:b].strip() for d, a, b in holes)
    stops = tuple(t for t in (st.eos, st.file_sep) if t is not None)
    return FimProbe(prompts, lines, max_new_tokens, st.fim_pad, stops)


def fill(model: Any, probe: FimProbe, indices: Sequence[int], tokenizer: Any) -> list[str]:
    """The predicted lines of the holes ``indices`` (greedy, batched; module doc)."""
    from sc2tune.decoding import generate_batch

    if not indices:
        return []
    new = generate_batch(model, [probe.prompts[i] for i in indices], pad_id=probe.pad_id, stop_ids=probe.stop_ids,
                         max_new_tokens=probe.max_new_tokens, batch_size=BATCH_SIZE)
    return [first_line(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
            for ids in new]
