"""Models and exports shared by the export tests, built once per module or session.

The tiny built-in StarCoder2 (random weights, the real tokenizer) as a model folder, and a PEFT LoRA adapter on
it with random non-zero factors (no training: what matters is that the exported weights carry the update).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sc2tune.modeling import resolve_model_path

#: Every Linear of StarCoder2.
LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]


def require_llama_cpp():
    """``llama_cpp``: installed by the README's test command (the ``test`` extra), so a missing one fails the
    test (it is never skipped silently)."""
    try:
        import llama_cpp
    except ImportError:
        pytest.fail("llama-cpp-python is not installed; install the test extra: pip install -e '.[test]'")
    return llama_cpp


def make_lora(base: Path, out: Path, *, seed: int = 0, std: float = 0.05, recipe: str | None = None,
              **lora: object) -> Path:
    """Save a PEFT LoRA adapter for ``base`` with random factors (and ``recipe`` as its recipe.yaml)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=lora.pop("r", 4), lora_alpha=lora.pop("lora_alpha", 8), lora_dropout=0.0,
                        target_modules=lora.pop("target_modules", LINEARS), task_type="CAUSAL_LM", **lora)
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    peft_model.save_pretrained(out)
    if recipe is not None:
        (out / "recipe.yaml").write_text(recipe)
    return out


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The built-in tiny StarCoder2 as a model folder (config, safetensors, the bundled tokenizer)."""
    return Path(resolve_model_path("sc2tune/tiny-starcoder2"))


@pytest.fixture(scope="session")
def tiny_lora(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter (r 4, alpha 8, every Linear) on the tiny model."""
    return make_lora(tiny_dir, tmp_path_factory.mktemp("lora") / "adapter")
