"""Generation at the edges of the model's context: empty prompts, prompts too long, capped lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import Starcoder2ForCausalLM

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.generate import Sampling, generate, load_for_inference
from sc2tune.tiny import load_bundled_tokenizer, tiny_config

CONTEXT = 48


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StarCoder2 that reads at most 48 positions and greedily emits 'x' at every step."""
    folder = tmp_path_factory.mktemp("short")
    tokenizer = load_bundled_tokenizer()
    (target,) = tokenizer.convert_tokens_to_ids(["x"])
    config = tiny_config()
    config.max_position_embeddings = CONTEXT
    config.tie_word_embeddings = False
    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(config)
    with torch.no_grad():
        v = torch.randn(config.hidden_size)
        model.model.norm.weight.zero_()
        model.model.norm.bias.copy_(v)
        model.lm_head.weight.zero_()
        model.lm_head.weight[target] = 10 * v
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_empty_prompt_is_a_clear_error(short_context_model: Path, capsys: pytest.CaptureFixture):
    assert main(["generate", str(short_context_model), "--prompt", ""]) == 1
    err = capsys.readouterr().err
    assert "prompt is empty" in err and "Traceback" not in err


def test_a_prompt_longer_than_the_context_is_refused(short_context_model: Path):
    tokenizer = load_bundled_tokenizer()
    prompt = " a" * (CONTEXT + 5)
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > CONTEXT
    with pytest.raises(UserError, match=f"reads at most {CONTEXT}"):
        generate(load_for_inference(short_context_model), prompt, Sampling(max_new_tokens=4, temperature=0))


def test_max_new_tokens_is_capped_by_the_context(short_context_model: Path, caplog: pytest.LogCaptureFixture):
    tokenizer = load_bundled_tokenizer()
    prompt = " a" * (CONTEXT - 3)
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert n == CONTEXT - 3
    out = generate(load_for_inference(short_context_model), prompt, Sampling(max_new_tokens=100, temperature=0))
    assert out == "x" * 3  # exactly the three positions left, not 100
    assert "capped to 3" in caplog.text
