"""StarCoder-family special tokens, looked up by name in a tokenizer, and the pad-token rule.

StarCoder2's tokenizer has no pad token, nor has StarCoder(Base)'s (a different vocabulary with the same
end and FIM token names). sc2tune pads with ``<fim_pad>``, never with eos, so the closing ``<|endoftext|>``
is always trained. Every special token is looked up by name in the tokenizer (ids are never assumed); the
repository tokens are StarCoder2's ``<repo_name>``/``<file_sep>``, which StarCoder(Base) has not got (it
has ``<reponame>``/``<filename>``), so they are optional.

This is the whole of what the data package needs to know about a tokenizer; it works on a transformers
tokenizer or on :class:`~sc2tune.tokenizer_files.TokenizerFiles` and imports neither torch nor transformers.
Its source is part of the prepared data's content key (:mod:`sc2tune.data.cache_key`): it shapes rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sc2tune.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Pad token used for every StarCoder-family tokenizer (it has none of its own).
PAD_TOKEN = "<fim_pad>"


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of the StarCoder-family special tokens, looked up by name in the tokenizer (None: not in it)."""

    eos: int
    fim_prefix: int | None
    fim_middle: int | None
    fim_suffix: int | None
    fim_pad: int | None
    repo_name: int | None
    file_sep: int | None


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """Id of ``token`` in ``tokenizer``; a clear error when the tokenizer does not have it."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id
                       and token != tokenizer.unk_token):
        raise UserError(
            f"the tokenizer has no '{token}' token",
            hint="FIM and padding need the StarCoder/StarCoder2 special tokens; use a StarCoder-family tokenizer",
        )
    return int(tid)


def optional_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    """Id of ``token``, or None when the tokenizer does not have it."""
    try:
        return token_id(tokenizer, token)
    except UserError:
        return None


def special_tokens(tokenizer: PreTrainedTokenizerBase, *, need_fim: bool = True) -> SpecialTokens:
    """Look up eos and the FIM/repository tokens by name (never by hard-coded id).

    With ``need_fim`` a missing FIM token is an error; otherwise it is returned as None.
    """
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no eos token", hint="StarCoder's and StarCoder2's is <|endoftext|>")
    fim = token_id if need_fim else optional_token_id
    return SpecialTokens(
        eos=int(tokenizer.eos_token_id),
        fim_prefix=fim(tokenizer, "<fim_prefix>"),
        fim_middle=fim(tokenizer, "<fim_middle>"),
        fim_suffix=fim(tokenizer, "<fim_suffix>"),
        fim_pad=fim(tokenizer, PAD_TOKEN),
        repo_name=optional_token_id(tokenizer, "<repo_name>"),
        file_sep=optional_token_id(tokenizer, "<file_sep>"),
    )


def set_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token distinct from eos: ``<fim_pad>`` when it has one."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    if PAD_TOKEN in tokenizer.get_vocab():
        tokenizer.pad_token = PAD_TOKEN
        return
    raise UserError(
        "the tokenizer has no pad token and no <fim_pad> to use as one",
        hint="padding with eos would stop the model from learning to end; add a pad token to the tokenizer",
    )


def encode_texts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Plain token ids of texts (no special tokens added; special-token strings inside a text stay text, as
    ``split_special_tokens`` tokenises them)."""
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"] if texts else []
