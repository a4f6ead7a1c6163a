"""Batched generation from token-id prompts with a causal LM (plain transformers or PEFT-wrapped).

:func:`generate_batch` is the one batched decoder of the package (``eval code --model``, the in-training FIM
curve). Layout of one batch of ``B`` prompts, the longest ``L`` tokens long, **left padded** so that every
row's next token is predicted from the same column::

    row b:  [pad] * (L - n_b)  +  prompt_b (n_b ids)  +  new ids ...
    attention_mask[b, j] = 0 for the pads, 1 for prompt and new ids
    position_ids[b, j]   = (cumsum(attention_mask[b])[j] - 1), 0 on the pads

so a prompt sees exactly the positions 0 .. n_b - 1 it would see alone, and the pads are never attended
to: greedy output equals one-prompt-at-a-time greedy (``tests/test_decoding.py`` checks it against plain
``model.generate``). Prompts are sorted by length (longest first) and cut into batches of ``batch_size``
(little padding), and the results are returned in the caller's order.

Decoding runs through the model's own ``generate`` (its KV cache, its per-step position ids):

* greedy (``temperature`` 0): ``argmax`` of the logits each step;
* sampling: ``softmax(logits / temperature)``, kept to the smallest set of tokens whose probability reaches
  ``top_p`` (nucleus; no top-k), drawn from torch's generator seeded with ``seed`` (forked: the caller's
  random state is left as it was), so the same inputs give the same samples.

A row stops at its first token in ``stop_ids`` (that token and what follows are not returned) or after
``max_new_tokens``; a stopped row is filled with ``pad_id`` while the others go on, and the batch ends when
every row has stopped. With ``stop_strings`` (and the ``tokenizer`` that decodes the ids) a row also stops
once its new text contains one of them (transformers' ``StopStringCriteria``); its ids are returned up to the
token that completed the string (trailing ``pad_id`` fill removed): the caller cuts the decoded text at the
string. StarCoder2 has no pad token: pass ``<fim_pad>`` (:data:`sc2tune.tokens.PAD_TOKEN`),
never eos (it is a stop id). The model is run in ``eval()`` mode (dropout off) and put back in the mode it
was in. Prompts plus new tokens must fit the model's context (``max_position_embeddings``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from sc2tune.errors import UserError


def context_length(model: Any) -> int | None:
    """Positions the model reads, prompt plus new tokens: StarCoder2's ``max_position_embeddings`` (16384),
    GPTBigCode's ``n_positions`` (8192), a PEFT model's base's; None if its config is silent."""
    config = getattr(model.get_base_model() if hasattr(model, "get_base_model") else model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int,
             device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` of ``prompts`` left padded to the longest (module doc)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def cut_at_stop(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
    """``ids`` up to (not including) the first id in ``stop_ids``."""
    stops = set(stop_ids)
    return next((list(ids[:i]) for i, t in enumerate(ids) if t in stops), list(ids))


def _trim(ids: list[int], pad_id: int) -> list[int]:
    """``ids`` without the ``pad_id`` fill after a row stopped by a stop string."""
    end = len(ids)
    while end and ids[end - 1] == pad_id:
        end -= 1
    return ids[:end]


def _check(prompts: Sequence[Sequence[int]], stop_ids: Sequence[int], max_new_tokens: int, batch_size: int,
           temperature: float, top_p: float, context: int | None) -> None:
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1 (got {max_new_tokens})")
    if batch_size < 1:
        raise UserError(f"batch_size must be at least 1 (got {batch_size})")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (got {temperature}); 0 means greedy")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] (got {top_p})")
    if not stop_ids:
        raise UserError("stop_ids is empty: give at least the end token (<|endoftext|>)")
    for number, prompt in enumerate(prompts):
        if not prompt:
            raise UserError(f"prompt {number} is empty: there is nothing to continue")
        if context is not None and len(prompt) + max_new_tokens > context:
            raise UserError(f"prompt {number} is {len(prompt):,} tokens; with max_new_tokens {max_new_tokens:,} "
                            f"that passes the model's {context:,}-token context",
                            hint="shorten the prompt or lower max_new_tokens")


def generate_batch(model: Any, prompts: Sequence[Sequence[int]], *, pad_id: int, stop_ids: Sequence[int],
                   max_new_tokens: int, batch_size: int = 16, temperature: float = 0.0, top_p: float = 1.0,
                   seed: int | None = None, stop_strings: Sequence[str] = (),
                   tokenizer: Any = None, on_batch: Callable[[int], None] | None = None) -> list[list[int]]:
    """The new token ids of each prompt, cut before its first stop id, in the order of ``prompts``.

    ``model`` is a causal LM with ``generate`` (a transformers model or a PEFT model over one); layout,
    stopping and sampling are in the module doc. ``seed`` None draws from seed 0. ``on_batch(rows)`` is
    called after each batch (a progress bar).
    """
    context = context_length(model)
    _check(prompts, stop_ids, max_new_tokens, batch_size, temperature, top_p, context)
    if stop_strings and tokenizer is None:
        raise UserError("stop_strings need the tokenizer that decodes the ids")
    if not prompts:
        return []
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[list[int]] = [[] for _ in prompts]
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "eos_token_id": list(stop_ids),
                              "pad_token_id": pad_id, "num_beams": 1}
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop_strings:
        kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
    was_training = model.training
    model.eval()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(0 if seed is None else seed)
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                ids, mask, positions = left_pad([prompts[i] for i in rows], pad_id, device)
                out = model.generate(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
                for row, new in zip(rows, out[:, ids.shape[1]:].tolist(), strict=True):
                    results[row] = _trim(cut_at_stop(new, stop_ids), pad_id) if stop_strings else cut_at_stop(
                        new, stop_ids)
                if on_batch is not None:
                    on_batch(len(rows))
    finally:
        model.train(was_training)
    return results
