"""PiSSA / OLoRA classifiers: the adapter converted to the original base keeps the trained ``score`` head.

References: the trained model itself (its ``score`` weights and its logits on the ids training feeds) and
plain transformers + PEFT loading the converted adapter on a freshly loaded original base.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from sc2tune.generation import classify
from sc2tune.merging import merge
from sc2tune.modeling import resolve_model_path
from sc2tune.recipe import recipe_from_dict
from sc2tune.tiny import load_bundled_tokenizer
from sc2tune.training import train

pytestmark = pytest.mark.slow
warnings.filterwarnings("ignore")

TEXTS = ["def f(): return 2", "x = [1, 2, 3]", "print('odd')"]


def _train(tmp_path: Path, init: str):
    rows = [{"text": f"def f{i}(): return {i}", "label": "even" if i % 2 == 0 else "odd"} for i in range(12)]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = recipe_from_dict({
        "task": "classify", "model": {"dtype": "float32"},
        "adapter": {"r": 4, "alpha": 8, "init": init, "dropout": 0.0},
        "data": {"train": str(data), "eval": None, "max_length": 32},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0, "save_steps": 1000},
        "output_dir": str(tmp_path / "run"),
    })
    return train(recipe, show_progress=False)


def _trained_probabilities(model: torch.nn.Module, texts: list[str]) -> list[list[float]]:
    """Softmax of ``model`` on ``tokens(text) + [<|endoftext|>]``, one text at a time (what training fed)."""
    tokenizer = load_bundled_tokenizer()
    model.eval()
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
            out.append(torch.softmax(model(input_ids=torch.tensor([ids])).logits.float(), -1)[0].tolist())
    return out


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_converted_classifier_keeps_the_trained_head(tmp_path: Path, init: str):
    result = _train(tmp_path, init)
    trained_head = result.model.base_model.model.score.modules_to_save["default"].weight.detach().clone()
    expected = _trained_probabilities(result.model, TEXTS)

    saved = load_file(str(result.adapter_dir / "adapter_model.safetensors"))
    assert torch.equal(saved["base_model.model.score.weight"], trained_head)  # exactly as trained

    # plain PEFT on a fresh original base: same classifier as the trained (residual-base) model
    labels = json.loads((result.adapter_dir / "labels.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path("sc2tune/tiny-starcoder2"), num_labels=len(labels), pad_token_id=4, dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(result.adapter_dir))
    for got, want in zip(_trained_probabilities(plain, TEXTS), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-5)

    # sc2tune classify on the run folder (it raised KeyError before the head was carried over)
    for prediction, want in zip(classify(result.output_dir, TEXTS), expected, strict=True):
        assert list(prediction.probabilities.values()) == pytest.approx(want, abs=1e-5)

    # merge (refused before), verified against the adapter model; the merged head is the trained one
    merged = merge(result.adapter_dir, tmp_path / "merged", progress=False)
    assert merged.verification is not None and merged.verification.passed
    folded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    assert torch.equal(folded.score.weight, trained_head)
    for got, want in zip(_trained_probabilities(folded, TEXTS), expected, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_converted_adapter_keeps_an_embedding_target(tmp_path: Path):
    """PiSSA with ``embed_tokens`` among the targets: the converted (rank 2r) adapter loads in plain PEFT on the
    original base and gives the trained model's logits (the rank-r embedding factors made it unloadable)."""
    from transformers import AutoModelForCausalLM

    code = tmp_path / "code"
    code.mkdir()
    for i in range(8):
        (code / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + {i % 3}\n")
    recipe = recipe_from_dict({
        "task": "fim", "model": {"dtype": "float32"},
        "adapter": {"r": 4, "alpha": 8, "init": "pissa", "dropout": 0.0, "target_modules": ["q_proj", "embed_tokens"]},
        "data": {"train": str(code), "eval": None, "max_length": 64, "fim": {"rate": 0.0}},
        "train": {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "warmup_ratio": 0.0, "save_steps": 1000},
        "output_dir": str(tmp_path / "run"),
    })
    result = train(recipe, show_progress=False)
    ids = torch.tensor([[10, 200, 3000, 45, 77, 900]])
    trained = result.model.eval()
    embedding = trained.base_model.model.model.embed_tokens
    assert float(embedding.lora_embedding_A["default"].abs().max()) > 0  # trained (A starts at zero)
    with torch.no_grad():
        expected = trained(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("sc2tune/tiny-starcoder2"), dtype=torch.float32)
    plain = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-4)
