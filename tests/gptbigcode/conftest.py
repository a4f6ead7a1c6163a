"""A tiny GPTBigCode (StarCoder/StarCoderBase architecture) folder shared by the tests in this package.

Random weights, multi-query attention (one key/value head, as StarCoder), fused ``attn.c_attn``, learned
absolute positions, GELU MLP ``mlp.c_fc``/``mlp.c_proj``, tied embeddings. Its tokenizer is sc2tune's bundled
**StarCoder2** tokenizer: the StarCoder(Base) tokenizer is not available offline. Both have 49152 tokens and
the same names for the end and FIM tokens (StarCoder's ``<reponame>``/``<filename>`` are StarCoder2's
``<repo_name>``/``<file_sep>``), and sc2tune looks every special token up by name, so the architecture is what
these tests exercise; the by-name lookup on a StarCoder-style vocabulary is tested in ``test_tokens.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

from sc2tune.tiny import load_bundled_tokenizer


def tiny_gptbigcode_config(**overrides) -> GPTBigCodeConfig:
    """StarCoder's layout at toy size: 2 layers, hidden 64, 4 query heads sharing one key/value head."""
    settings = dict(vocab_size=49152, n_positions=512, n_embd=64, n_layer=2, n_head=4, n_inner=256,
                    multi_query=True, activation_function="gelu_pytorch_tanh", bos_token_id=0, eos_token_id=0,
                    attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, scale_attn_weights=True)
    settings.update(overrides)
    return GPTBigCodeConfig(**settings)


def write_tiny_gptbigcode(folder: Path, *, seed: int = 11, **overrides) -> Path:
    """Save a seeded random tiny GPTBigCode causal LM and the bundled tokenizer to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = GPTBigCodeForCausalLM(tiny_gptbigcode_config(**overrides)).eval()
    model.save_pretrained(folder)
    load_bundled_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def gptbigcode_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny GPTBigCode (config.json, model.safetensors, tokenizer)."""
    return write_tiny_gptbigcode(tmp_path_factory.mktemp("tiny-gptbigcode"))
