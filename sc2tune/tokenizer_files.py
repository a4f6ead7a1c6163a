"""A tokenizer folder read straight from its files, for checks that need token names and ids only.

``AutoTokenizer`` imports torch and transformers' whole tokenizer stack (seconds); checking that a folder's
tokenizer has eos, ``<fim_pad>`` and the FIM tokens needs only its vocabulary and its special-token names:
``tokenizer.json`` (the vocabulary and added tokens, read with the ``tokenizers`` library) and
``tokenizer_config.json`` (which token is eos, pad, unk). :class:`TokenizerFiles` offers the few attributes
sc2tune's token checks read (``eos_token_id``, ``pad_token``, ``convert_tokens_to_ids``, ``get_vocab``,
``len``), so the same checks run on it.

:meth:`TokenizerFiles.open` returns None whenever the files leave room for transformers to answer otherwise
(remote code, a slow-only tokenizer class, special tokens missing from the vocabulary, which transformers
would add, two files disagreeing): the caller then loads the tokenizer through transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Tokenizer classes that load a folder's tokenizer.json as it is.
FAST_CLASSES = frozenset({"PreTrainedTokenizerFast", "GPT2Tokenizer", "GPT2TokenizerFast", "TokenizersBackend"})
_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token")


def _content(value: Any) -> str | None | bool:
    """A special token's text (``"<x>"`` or ``{"content": "<x>", ...}``); None if unset; False if unreadable."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return False


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class TokenizerFiles:
    """The vocabulary and special tokens of a tokenizer folder (see the module docstring)."""

    def __init__(self, vocab: dict[str, int], size: int, special: dict[str, str | None]) -> None:
        self._vocab = vocab
        self._size = size
        self.eos_token = special["eos_token"]
        self.unk_token = special["unk_token"]
        self.pad_token = special["pad_token"]

    @classmethod
    def open(cls, folder: str | Path) -> TokenizerFiles | None:
        """Read ``folder``, or None when only transformers can say what its tokenizer is."""
        folder = Path(folder)
        if (folder / "added_tokens.json").exists():
            return None
        config = _read(folder / "tokenizer_config.json")
        if config is None or "auto_map" in config or config.get("tokenizer_class") not in FAST_CLASSES:
            return None
        special = {key: _content(config.get(key)) for key in _SPECIAL}
        if False in special.values() or special["eos_token"] is None:  # an unreadable special token, or no eos
            return None
        mapped = folder / "special_tokens_map.json"
        if mapped.exists():
            data = _read(mapped)
            if data is None or any(_content(data.get(k)) != special[k] for k in _SPECIAL if k in data):
                return None
        extra = [*(config.get("additional_special_tokens") or []), *(config.get("extra_special_tokens") or [])]
        try:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception:  # noqa: BLE001 - any unreadable file: let transformers report it
            return None
        vocab = backend.get_vocab(with_added_tokens=True)
        names = [v for v in special.values() if v is not None] + [_content(t) for t in extra]
        if any(not isinstance(n, str) or n not in vocab for n in names):
            return None
        decoder = config.get("added_tokens_decoder") or {}
        if not isinstance(decoder, dict) or any(str(vocab.get(_content(tok))) != idx  # type: ignore[arg-type]
                                                for idx, tok in decoder.items()):
            return None
        return cls(vocab, backend.get_vocab_size(with_added_tokens=True), special)

    def __len__(self) -> int:
        return self._size

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def convert_tokens_to_ids(self, token: str) -> int | None:
        """The token's id, else the unk token's id (None without one), as a fast tokenizer answers."""
        return self._vocab.get(token, self.unk_token_id)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self._vocab.get(self.eos_token)

    @property
    def unk_token_id(self) -> int | None:
        return None if self.unk_token is None else self._vocab.get(self.unk_token)

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self._vocab.get(self.pad_token)
