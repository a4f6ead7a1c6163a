"""StarCoder2's fill-in-the-middle prompt for llama.cpp, from token ids.

llama-cpp-python 0.3.36 builds a ``suffix`` request's prompt with token 0 (``<|endoftext|>``) in place of all
three FIM markers. sc2tune builds the PSM prompt as StarCoder2 was trained and as ``sc2tune generate`` does
(:func:`sc2tune.generation.infill_prompt_ids`)::

    <fim_prefix> tokens(prompt) <fim_suffix> tokens(suffix) <fim_middle>

The markers are looked up by their text in the model's own vocabulary (each must be one special token); the
user's text is tokenised with special-token parsing off, so a ``<file_sep>`` typed in the code stays text.
Generation stops at the model's end-of-generation tokens, which the GGUF metadata sets (``<|endoftext|>``, and
``<file_sep>`` as llama.cpp's FIM separator).
"""

from __future__ import annotations

from typing import Any

from sc2tune.errors import UserError

#: The PSM markers, in prompt order.
FIM_MARKERS = ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")


def special_id(llama: Any, text: str) -> int:
    """The id of the special token spelt ``text`` in ``llama``'s vocabulary (a ``llama_cpp.Llama``)."""
    ids = llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if len(ids) != 1:
        raise UserError(f"the model's vocabulary has no {text} token, so it cannot fill in the middle",
                        hint="serve a StarCoder2 model exported by sc2tune, or send the prompt without a suffix")
    return int(ids[0])


def fim_prompt_ids(llama: Any, prompt: str, suffix: str) -> list[int]:
    """PSM prompt ids (module doc) for ``prompt`` (the code before the hole) and ``suffix`` (after it)."""
    prefix_id, suffix_id, middle_id = (special_id(llama, marker) for marker in FIM_MARKERS)

    def text(value: str) -> list[int]:
        return list(llama.tokenize(value.encode("utf-8"), add_bos=False, special=False)) if value else []

    return [prefix_id, *text(prompt), suffix_id, *text(suffix), middle_id]
