"""llama.cpp reads the exported tokenizer as the tokenizer the model was trained with.

Loaded with ``vocab_only`` (no weights): llama.cpp's own FIM ids, end-of-generation set and tokenisation,
against the transformers tokenizer (ids by name, its ``encode``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import require_llama_cpp

TEXTS = ["def add(a, b):\n    return a + b\n", "x = 12345  # naïve café 🚀\n\tif x:\n        pass",
         "<fim_prefix>import os\n<fim_suffix>\nprint(1)<fim_middle>", "<repo_name>r<file_sep>a/b.py\ncode<|endoftext|>"]


@pytest.fixture(scope="module")
def vocab_only(tiny_f32_gguf: Path):
    llama_cpp = require_llama_cpp()
    llm = llama_cpp.Llama(str(tiny_f32_gguf), vocab_only=True, verbose=False)
    yield llama_cpp, llm
    llm.close()


def test_fim_ids_and_the_stop_set(vocab_only, tokenizer) -> None:
    llama_cpp, llm = vocab_only
    vocab = llm._model.vocab
    by_name = tokenizer.convert_tokens_to_ids
    assert llama_cpp.llama_vocab_fim_pre(vocab) == by_name("<fim_prefix>")
    assert llama_cpp.llama_vocab_fim_suf(vocab) == by_name("<fim_suffix>")
    assert llama_cpp.llama_vocab_fim_mid(vocab) == by_name("<fim_middle>")
    assert llama_cpp.llama_vocab_fim_pad(vocab) == by_name("<fim_pad>")
    assert llama_cpp.llama_vocab_fim_rep(vocab) == by_name("<repo_name>")
    assert llama_cpp.llama_vocab_fim_sep(vocab) == by_name("<file_sep>")
    assert llama_cpp.llama_vocab_eot(vocab) == llama_cpp.llama_vocab_eos(vocab) == tokenizer.eos_token_id
    stops = {i for i in range(64) if llama_cpp.llama_vocab_is_eog(vocab, i)}
    assert {tokenizer.eos_token_id, by_name("<file_sep>")} <= stops
    assert by_name("<fim_prefix>") not in stops and by_name("<fim_middle>") not in stops
    assert not llama_cpp.llama_vocab_get_add_bos(vocab)


@pytest.mark.parametrize("text", TEXTS)
def test_tokenisation_is_the_tokenizers(vocab_only, tokenizer, text: str) -> None:
    _, llm = vocab_only
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == tokenizer(text)["input_ids"]
    plain = tokenizer(text, split_special_tokens=True)["input_ids"]  # special-token text read as text
    assert llm.tokenize(text.encode(), add_bos=False, special=False) == plain
