"""FIM infilling probe on held-out code: cut a hole, let the model fill it greedily, compare.

Held-out documents are recovered from the recipe's tokenized eval rows, so they are exactly the held-out split
the data pipeline made (:func:`sc2tune.data.holes.recover_documents`, FIM and repository layout undone).

For each probe kind, documents are drawn with ``random.Random(f"{seed}:{kind}")`` and cut into
``prefix | middle | suffix``: ``lines`` = 1-3 whole non-blank lines, ``span`` = a random character span
of at most ``max_span_chars``. The prompt is StarCoder2's PSM layout::

    <fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>

with the prefix cut on the left and the suffix on the right to fit the context. Greedy decoding stops
at ``<|endoftext|>`` (or ``<file_sep>``); the generated middle is scored by exact match and edit
similarity against the true middle (:mod:`sc2tune.metrics`). Generation is capped at
``min(max_new_tokens, 2 * len(tokens(middle)) + 8)`` new tokens: a model that does not stop cannot
run on for long, and a correct middle always fits.

Each kind's scores keep the per-hole values (``per_case``, the units of the bootstrap) and a 95%
percentile-bootstrap interval over holes (``ci95``, :mod:`sc2tune.evaluation.intervals`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from sc2tune.decoding import cut_at_stop
from sc2tune.evaluation.intervals import bootstrap_interval
from sc2tune.evaluation.problems import fim_cut
from sc2tune.metrics import edit_similarity, exact_match
from sc2tune.tokens import special_tokens


@dataclass(frozen=True)
class InfillCase:
    """One hole in one held-out document."""

    kind: str  #: lines | span
    prefix: str
    middle: str
    suffix: str


def make_cases(docs: list[str], kind: str, count: int, seed: int, *, max_span_chars: int = 200
               ) -> list[InfillCase]:
    """``count`` holes of ``kind`` (lines | span) in distinct documents, deterministic for ``seed``."""
    rng = random.Random(f"{seed}:{kind}")
    chosen = rng.sample(range(len(docs)), min(count, len(docs)))
    cases = []
    for i in chosen:
        doc = docs[i]
        if kind == "lines":
            a, b = fim_cut(doc, "lines", rng)
        else:
            a = rng.randrange(len(doc))
            b = a + rng.randint(1, min(max_span_chars, len(doc) - a))
        cases.append(InfillCase(kind, doc[:a], doc[a:b], doc[b:]))
    return cases


def fim_prompt_ids(case: InfillCase, tokenizer: PreTrainedTokenizerBase, budget: int) -> list[int]:
    """PSM prompt ids with at most ``budget`` prefix + suffix tokens (prefix cut left, suffix right)."""
    sp = special_tokens(tokenizer, need_fim=True)
    pre = tokenizer(case.prefix, add_special_tokens=False)["input_ids"]
    suf = tokenizer(case.suffix, add_special_tokens=False)["input_ids"]
    keep_suf = min(len(suf), max(budget // 2, budget - len(pre)))
    keep_pre = min(len(pre), budget - keep_suf)
    pre = pre[len(pre) - keep_pre:] if keep_pre > 0 else []
    return [sp.fim_prefix, *pre, sp.fim_suffix, *suf[:keep_suf], sp.fim_middle]


@torch.no_grad()
def generate_middles(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, cases: list[InfillCase],
                     *, max_length: int, max_new_tokens: int = 128) -> list[str]:
    """Greedy middles for ``cases`` (one at a time, so no padding questions)."""
    sp = special_tokens(tokenizer, need_fim=True)
    stops = [t for t in (sp.eos, sp.file_sep) if t is not None]
    device = next(model.parameters()).device
    model.eval()
    out = []
    for case in cases:
        ids = fim_prompt_ids(case, tokenizer, max(8, max_length - max_new_tokens - 3))
        input_ids = torch.tensor([ids], device=device)
        cap = min(max_new_tokens, 2 * len(tokenizer(case.middle, add_special_tokens=False)["input_ids"]) + 8)
        generated = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   max_new_tokens=cap, do_sample=False, eos_token_id=stops,
                                   pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        out.append(tokenizer.decode(cut_at_stop(generated, stops), skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False))
    return out


def infill_scores(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, cases: list[InfillCase], *,
                  max_length: int, max_new_tokens: int = 128) -> dict[str, dict]:
    """``{kind: {exact_match, edit_similarity, count, examples, per_case, ci95}}`` over the cases of each kind:
    ``per_case`` holds each hole's exact match and edit similarity in case order, ``ci95`` their means'
    bootstrap intervals."""
    predictions = generate_middles(model, tokenizer, cases, max_length=max_length, max_new_tokens=max_new_tokens)
    result: dict[str, dict] = {}
    for kind in sorted({c.kind for c in cases}):
        pairs = [(p, c) for p, c in zip(predictions, cases, strict=True) if c.kind == kind]
        per_case = {"exact_match": [float(exact_match(p, c.middle)) for p, c in pairs],
                    "edit_similarity": [float(edit_similarity(p, c.middle)) for p, c in pairs]}
        result[kind] = {**{key: sum(values) / len(values) for key, values in per_case.items()},
                        "count": len(pairs), "examples": [{"middle": c.middle, "generated": p} for p, c in pairs[:3]],
                        "per_case": per_case,
                        "ci95": {key: bootstrap_interval(values) for key, values in per_case.items()}}
    return result
