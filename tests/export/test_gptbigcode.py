"""GPTBigCode (StarCoder/StarCoderBase) exports as llama.cpp's ``starcoder`` architecture.

Reference: transformers' GPTBigCode forward on a tiny random model (multi-query attention, learned positions,
fused ``c_attn``); a model with ``multi_query: false`` (whose fused layout llama.cpp does not read) is refused.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
import torch

from sc2tune.errors import UserError
from sc2tune.export.api import export_gguf
from sc2tune.tiny import load_bundled_tokenizer

from .conftest import require_llama_cpp


def tiny_gptbigcode(folder: Path, **overrides: object) -> Path:
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    settings = dict(vocab_size=49152, n_positions=256, n_embd=64, n_layer=2, n_head=4, n_inner=256,
                    multi_query=True, activation_function="gelu_pytorch_tanh", bos_token_id=0, eos_token_id=0,
                    attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)
    settings.update(overrides)
    torch.manual_seed(5)
    GPTBigCodeForCausalLM(GPTBigCodeConfig(**settings)).eval().save_pretrained(folder)
    load_bundled_tokenizer().save_pretrained(folder)
    return folder


def test_gptbigcode_runs_in_llama_cpp_as_in_transformers(tmp_path: Path, tokenizer) -> None:
    llama_cpp = require_llama_cpp()
    from transformers import AutoModelForCausalLM

    folder = tiny_gptbigcode(tmp_path / "gptbigcode")
    out = export_gguf(folder, tmp_path / "starcoder.gguf", dtype="f32")
    meta = {k: f.contents() for k, f in gguf.GGUFReader(out).fields.items()}
    assert meta["general.architecture"] == "starcoder" and meta["starcoder.attention.head_count_kv"] == 1
    assert meta["starcoder.feed_forward_length"] == 256 and meta["starcoder.context_length"] == 256
    ids = tokenizer("<fim_prefix>def f(x):\n    <fim_suffix>\n<fim_middle>")["input_ids"]
    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor([ids])).logits[0].numpy()
    llm = llama_cpp.Llama(str(out), n_ctx=64, n_threads=1, logits_all=True, verbose=False)
    try:
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    assert np.abs(got - reference).max() < 0.02
    assert (got.argmax(-1) == reference.argmax(-1)).all()


def test_multi_head_gptbigcode_is_refused(tmp_path: Path) -> None:
    folder = tiny_gptbigcode(tmp_path / "mha", multi_query=False)
    with pytest.raises(UserError, match="multi_query: false"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()
