"""A completion or chat request's sampling parameters: checked against :mod:`sc2tune.sampling` (the ranges
``sc2tune generate`` uses too) and rewritten for llama-cpp-python's server.

What a request becomes (OpenAI's names in, llama-cpp-python's out):

* ``repetition_penalty`` (the hosted page's, vLLM's and TGI's name) is llama.cpp's ``repeat_penalty``; either
  name is accepted, both with different values is an error;
* ``max_completion_tokens`` (OpenAI's newer chat name) is ``max_tokens``;
* a parameter left out (or null) gets sc2tune's default, not llama-cpp-python's: temperature 0.2, top-p 0.95,
  top-k off (0), repeat penalty 1 (none; llama-cpp-python's would be 1.1), min-p 0 (off; its would be 0.05),
  128 tokens;
* ``n`` and ``seed`` are taken out: the server runs ``n`` requests of one response each, response ``i`` with
  seed ``seed + i`` (mod 2**32) when a seed is given.

A prompt is one string (llama-cpp-python takes no more per request), and ``logprobs`` are refused (the server
keeps no logits). Only the names above are checked here; every other field goes to llama-cpp-python's own request model as it
came (its validation answers 422).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sc2tune.sampling import DEFAULTS, SEED_LIMIT, BadParameter, check_parameters, check_stop

#: llama-cpp-python's name for a parameter whose OpenAI name differs.
ENGINE_NAMES = {"repetition_penalty": "repeat_penalty"}
#: llama-cpp-python-only defaults made neutral (min-p filters tokens below 5% of the top one by default).
ENGINE_DEFAULTS = {"min_p": 0.0}


@dataclass(frozen=True)
class Checked:
    """A checked request: ``body`` is what llama-cpp-python's route reads for one response (no ``n``, no
    ``seed``); ``n`` responses are asked for, response ``i`` with :meth:`body_for`."""

    body: dict[str, Any]
    n: int
    seed: int | None
    stream: bool

    def body_for(self, index: int) -> dict[str, Any]:
        """The body of response ``index``: its seed ``seed + index`` (mod 2**32), if a seed was given."""
        if self.seed is None:
            return dict(self.body)
        return {**self.body, "seed": (self.seed + index) % SEED_LIMIT}


def check_request(body: Any, *, chat: bool, context: int) -> Checked:
    """Check and rewrite a ``/v1/completions`` (``chat`` False) or ``/v1/chat/completions`` body (module doc);
    :class:`~sc2tune.sampling.BadParameter` names the first parameter out of range. ``context`` bounds
    ``max_tokens`` (the server's context length)."""
    if not isinstance(body, dict):
        raise BadParameter("body", "the request body must be a JSON object")
    body = dict(body)
    if chat and body.get("max_completion_tokens") is not None:
        if body.get("max_tokens") is not None and body["max_tokens"] != body["max_completion_tokens"]:
            raise BadParameter("max_completion_tokens", "max_tokens and max_completion_tokens differ: give one")
        body["max_tokens"] = body["max_completion_tokens"]
    body.pop("max_completion_tokens", None)
    for ours, theirs in ENGINE_NAMES.items():
        if body.get(theirs) is not None:
            if body.get(ours) is not None and body[ours] != body[theirs]:
                raise BadParameter(ours, f"{ours} and {theirs} differ: give one (they are the same parameter)")
            body[ours] = body[theirs]
        body.pop(theirs, None)
    check_parameters(body, context=context)
    if "stop" in body:
        body["stop"] = list(check_stop(body["stop"])) or None
    prompt = body.get("prompt")
    if not chat and not (isinstance(prompt, str) or (isinstance(prompt, list) and len(prompt) <= 1
                                                     and all(isinstance(p, str) for p in prompt))):
        raise BadParameter("prompt", "prompt must be a string (one prompt per request; n asks for more responses)")
    if not chat and body.get("suffix") is None and prompt in ("", [""], []):
        raise BadParameter("prompt", "prompt is empty: there is nothing to continue")
    if body.get("logprobs") not in (None, False):
        raise BadParameter("logprobs", "logprobs are not served (the server keeps no logits): leave logprobs out")
    suffix = body.get("suffix")
    if suffix is not None and (chat or not isinstance(suffix, str)):
        raise BadParameter("suffix", "suffix must be a string, and only in /v1/completions")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise BadParameter("stream", f"stream must be true or false (got {stream!r})")
    n, seed = body.pop("n", None) or 1, body.pop("seed", None)
    for name, default in DEFAULTS.items():
        if body.get(name) is None and name != "n":
            body[name] = default
    for ours, theirs in ENGINE_NAMES.items():
        body[theirs] = body.pop(ours)
    for name, default in ENGINE_DEFAULTS.items():
        body.setdefault(name, default)
    return Checked(body, n, seed, stream)
