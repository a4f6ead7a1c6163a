"""The tokenizer part of a GGUF file: vocabulary, merges, token types, special and FIM token ids.

What llama.cpp's ``convert_hf_to_gguf.py`` writes for a GPT-2-style BPE tokenizer (``_set_vocab_gpt2``), read
from the transformers tokenizer the model was trained with::

    tokenizer.ggml.model        "gpt2"
    tokenizer.ggml.pre          "starcoder" for StarCoder2's (and StarCoder's) pre-tokenizer, recognised as the
                                converter does: by the sha256 of the ids of a fixed probe text
    tokenizer.ggml.tokens       id -> token text, ``[PADi]`` for an id the vocabulary lacks (vocab_size rows)
    tokenizer.ggml.token_type   1 normal, 3 control (a special added token, or one that looks special:
                                ``<|...|>``), 4 user-defined (another added token), 5 unused (a ``[PADi]``)
    tokenizer.ggml.merges       "left right" per BPE merge, a space inside a part written as U+0120+256
    tokenizer.ggml.{bos,eos,unknown,padding}_token_id, add_bos_token/add_eos_token (False: the ByteLevel
                                post-processor adds nothing)

and the ids the converter leaves to llama.cpp's guess by token text, written here by name so llama.cpp's FIM
(``/infill``, ``suffix``) and its end-of-generation set do not depend on that guess::

    tokenizer.ggml.eot_token_id      <|endoftext|>
    tokenizer.ggml.fim_pre_token_id  <fim_prefix>    fim_suf  <fim_suffix>    fim_mid  <fim_middle>
    tokenizer.ggml.fim_pad_token_id  <fim_pad>       fim_rep  <repo_name> (StarCoder: <reponame>)
    tokenizer.ggml.fim_sep_token_id  <file_sep> (StarCoder: <filename>)

llama.cpp ends generation at eos/eot and at the fim_pad, fim_rep and fim_sep tokens (``llama-vocab.cpp``), so
a completion stops at ``<|endoftext|>`` and at ``<file_sep>``. The pad id is ``<fim_pad>``: what sc2tune pads
with (StarCoder2 has no pad token of its own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING

from sc2tune.errors import UserError
from sc2tune.tokens import PAD_TOKEN, optional_token_id

if TYPE_CHECKING:
    from gguf import GGUFWriter
    from transformers import PreTrainedTokenizerBase

#: llama.cpp's probe text for the pre-tokenizer (convert_hf_to_gguf.py, ``get_vocab_base_pre``).
CHKTXT = ('\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ '
          '🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
          '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
          '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL')

#: sha256 of the probe's ids -> ``tokenizer.ggml.pre``, for the StarCoder-family tokenizers (the converter's own
#: table: bigcode/starcoder2-3b; StarCoder(Base)'s tokenizer has the same pre-tokenizer rules).
KNOWN_PRE: dict[str, str] = {
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
}

#: Token names per GGUF key, first name found wins (StarCoder2, then StarCoder(Base)).
FIM_TOKENS: dict[str, tuple[str, ...]] = {
    "fim_pre": ("<fim_prefix>",),
    "fim_suf": ("<fim_suffix>",),
    "fim_mid": ("<fim_middle>",),
    "fim_pad": ("<fim_pad>",),
    "fim_rep": ("<repo_name>", "<reponame>"),
    "fim_sep": ("<file_sep>", "<filename>"),
}


@dataclass(frozen=True)
class GgufVocab:
    """Everything the GGUF tokenizer keys hold (see the module docstring)."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    bos: int
    eos: int
    unk: int | None
    pad: int | None
    fim: dict[str, int]  #: GGUF key part (fim_pre, ...) -> id, for the tokens the tokenizer has


def _merges(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """BPE merges as ``"left right"`` (the list-of-pairs format encodes a space inside a part as chr(32+256))."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UserError("the tokenizer is not a fast (tokenizers) BPE tokenizer: GGUF needs its merges",
                        hint="save the model with its tokenizer.json")
    model = json.loads(backend.to_str()).get("model", {})
    merges = model.get("merges")
    if model.get("type") != "BPE" or not isinstance(merges, list) or not merges:
        raise UserError("the tokenizer is not a byte-level BPE tokenizer with merges (StarCoder's kind)",
                        hint="GGUF export supports the StarCoder-family tokenizers")
    if isinstance(merges[0], str):
        return [str(m) for m in merges]
    return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
            for pair in merges]


#: StarCoder's pre-tokenizer (tokenizer.json ``pre_tokenizer``): single digits, then GPT-2's byte-level regex.
STARCODER_PRE_TOKENIZER = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}


def pre_tokenizer(tokenizer: PreTrainedTokenizerBase) -> str:
    """``tokenizer.ggml.pre``: found as the converter finds it (hash of the probe text's ids); a vocabulary the
    converter's table lacks (StarCoderBase's) passes when its pre-tokenizer rules are StarCoder's; else an error."""
    digest = sha256(str(tokenizer.encode(CHKTXT)).encode()).hexdigest()
    if digest in KNOWN_PRE:
        return KNOWN_PRE[digest]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and json.loads(backend.to_str()).get("pre_tokenizer") == STARCODER_PRE_TOKENIZER:
        return "starcoder"
    raise UserError(
        f"the tokenizer's pre-tokenizer is not StarCoder's (probe hash {digest[:12]}...): llama.cpp would "
        "split text differently from training",
        hint="GGUF export supports the StarCoder-family tokenizers (StarCoder2, StarCoder/StarCoderBase)",
    )


def gguf_vocab(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> GgufVocab:
    """Read the vocabulary and special ids off ``tokenizer`` (``vocab_size``: the model's embedding rows)."""
    from gguf import TokenType

    vocab: dict[str, int] = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise UserError(f"the tokenizer has ids up to {max(vocab.values())} but the model only {vocab_size} "
                        "embedding rows", hint="export the tokenizer the model was trained with")
    reverse = {i: t for t, i in vocab.items()}
    added = tokenizer.get_added_vocab()
    decoder = tokenizer.added_tokens_decoder
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
            continue
        if token in added:
            special = decoder[i].special if i in decoder else False
            looks_special = token.startswith("<|") and token.endswith("|>")  # the converter's rule, this family
            types.append(TokenType.CONTROL if special or looks_special else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
        tokens.append(token)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no eos token", hint="StarCoder's and StarCoder2's is <|endoftext|>")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    fim: dict[str, int] = {}
    for key, names in FIM_TOKENS.items():
        tid = next((t for t in (optional_token_id(tokenizer, n) for n in names) if t is not None), None)
        if tid is not None:
            fim[key] = tid
    missing = [k for k in ("fim_pre", "fim_suf", "fim_mid") if k not in fim]
    if missing:
        raise UserError(f"the tokenizer lacks the FIM tokens for {', '.join(missing)}",
                        hint="GGUF export needs a StarCoder-family tokenizer (<fim_prefix>, <fim_suffix>, "
                        "<fim_middle>)")
    return GgufVocab(tokens, types, _merges(tokenizer), pre_tokenizer(tokenizer), int(bos), int(eos),
                     tokenizer.unk_token_id, optional_token_id(tokenizer, PAD_TOKEN), fim)


def write_vocab(writer: GGUFWriter, vocab: GgufVocab, *, chat_template: str | None = None) -> None:
    """Add the tokenizer keys of ``vocab`` (and a chat template) to ``writer``."""
    from gguf import Keys

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos)
    writer.add_eos_token_id(vocab.eos)
    writer.add_eot_token_id(vocab.eos)
    if vocab.unk is not None:
        writer.add_unk_token_id(vocab.unk)
    if vocab.pad is not None:
        writer.add_pad_token_id(vocab.pad)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    for name, tid in vocab.fim.items():  # fim_pre -> Keys.Tokenizer.FIM_PRE_ID, ...
        writer.add_uint32(getattr(Keys.Tokenizer, f"{name.upper()}_ID"), tid)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
