"""Training the tiny GPTBigCode (StarCoder architecture) end to end: FIM LoRA and QLoRA, instruction
tuning, classification and full fine-tuning, each a handful of steps, checked through plain
transformers + PEFT (not through sc2tune's own loaders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train

pytestmark = pytest.mark.slow

CODE = {
    "repo_a/util.py": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
    "repo_a/greet.py": "def greet(name):\n    return 'hello ' + name\n",
    "repo_b/area.py": "import math\n\n\ndef circle_area(r):\n    return math.pi * r * r\n",
}
ALPACA = [
    {"instruction": "Write a Python function that returns the square of x.", "input": "",
     "output": "def square(x):\n    return x * x"},
    {"instruction": "Reverse the given string in Python.", "input": "s = 'abc'", "output": "s[::-1]"},
]
SNIPPETS = {"python": "def f(x):\n    return x + 1\n", "sql": "SELECT name FROM users WHERE id = 3;",
            "go": "func main() {\n\tfmt.Println(1)\n}"}
IDS = torch.tensor([[1, 755, 3207, 26, 83, 731, 3, 1079, 2, 4650, 317, 2284, 0]])


def _code(root: Path) -> Path:
    for rel, text in CODE.items():
        (root / "code" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "code" / rel).write_text(text)
    return root / "code"


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _losses(run: Path) -> list[float]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def _recipe(base: Path, tmp_path: Path, task: str, data: dict, *, adapter: dict | None = None,
            model: dict | None = None, **train_settings) -> dict:
    return {
        "model": {"name_or_path": str(base), **(model or {})},
        "task": task,
        "adapter": {"r": 8, "alpha": 16, "dropout": 0.0, **(adapter or {})},
        "data": {"eval": None, "max_length": 128, **data},
        "train": {"max_steps": 8, "batch_size": 2, "lr": 5e-3, "warmup_ratio": 0.0, "scheduler": "constant",
                  "logging_steps": 1, "save_steps": 1000, "seed": 3, **train_settings},
        "output_dir": str(tmp_path / "run"),
    }


def _peft(base: Path, adapter_dir: Path) -> PeftModel:
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter_dir)).eval()


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_fim_training_adapts_the_fused_attention(gptbigcode_dir: Path, tmp_path: Path, method: str) -> None:
    data = {"train": str(_code(tmp_path)), "packing": True, "fim": {"rate": 1.0, "spm_rate": 0.5}}
    result = train(recipe_from_dict(_recipe(gptbigcode_dir, tmp_path, "fim", data, adapter={"method": method})),
                   show_progress=False)
    losses = _losses(result.output_dir)
    assert len(losses) == 8 and all(x == x for x in losses) and losses[-1] < losses[0]
    config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"c_attn", "c_proj", "c_fc"}  # the architecture's defaults
    if method == "lora":
        plain = _peft(gptbigcode_dir, result.adapter_dir)
        wrapped = {n.split(".lora_A")[0] for n, _ in plain.named_parameters() if ".lora_A" in n}
        assert any(n.endswith("attn.c_attn") for n in wrapped) and any(n.endswith("mlp.c_fc") for n in wrapped)
        with torch.no_grad():
            tuned = plain(input_ids=IDS).logits
            with plain.disable_adapter():
                base = plain(input_ids=IDS).logits
        assert not torch.allclose(tuned, base, atol=1e-4), "the adapter changed nothing"
    else:
        assert "method: qlora" in (result.adapter_dir / "recipe.yaml").read_text()


def test_instruct_training_trains_responses(gptbigcode_dir: Path, tmp_path: Path) -> None:
    data = {"train": str(_jsonl(tmp_path / "a.jsonl", ALPACA)), "template": "alpaca", "max_length": 256}
    result = train(recipe_from_dict(_recipe(gptbigcode_dir, tmp_path, "instruct", data, max_steps=10, lr=1e-2)),
                   show_progress=False)
    losses = _losses(result.output_dir)
    assert losses[-1] < losses[0] - 0.5  # 10 steps on two records: clearly learning
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()


def test_classification_trains_and_saves_the_score_head(gptbigcode_dir: Path, tmp_path: Path) -> None:
    records = [{"text": text, "label": label} for label, text in SNIPPETS.items()] * 4
    data = {"train": str(_jsonl(tmp_path / "c.jsonl", records)), "max_length": 64}
    recipe = _recipe(gptbigcode_dir, tmp_path, "classify", data, model={"head": "sequence-classification"},
                     max_steps=30, batch_size=6, lr=1e-2)
    result = train(recipe_from_dict(recipe), show_progress=False)
    labels = json.loads((result.adapter_dir / "labels.json").read_text())
    base = AutoModelForSequenceClassification.from_pretrained(
        gptbigcode_dir, num_labels=len(labels), id2label={int(k): v for k, v in labels.items()}, pad_token_id=4)
    assert type(base).__name__ == "GPTBigCodeForSequenceClassification"
    model = PeftModel.from_pretrained(base, str(result.adapter_dir)).eval()
    from sc2tune.tiny import load_bundled_tokenizer

    tokenizer = load_bundled_tokenizer()
    for label, text in SNIPPETS.items():
        ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        with torch.no_grad():
            predicted = model(input_ids=torch.tensor([ids])).logits.argmax(-1).item()
        assert labels[str(predicted)] == label


def test_full_fine_tuning_writes_a_plain_model(gptbigcode_dir: Path, tmp_path: Path) -> None:
    data = {"train": str(_jsonl(tmp_path / "a.jsonl", ALPACA)), "template": "alpaca", "max_length": 256}
    recipe = _recipe(gptbigcode_dir, tmp_path, "instruct", data, adapter={"method": "full"}, max_steps=4, lr=1e-4)
    result = train(recipe_from_dict(recipe), show_progress=False)
    assert result.adapter_dir is not None and result.adapter_dir.name == "model"
    tuned = AutoModelForCausalLM.from_pretrained(result.adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(gptbigcode_dir).eval()
    assert type(tuned).__name__ == "GPTBigCodeForCausalLM"
    changed = [n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert any("attn.c_attn" in n for n in changed) and any("mlp.c_fc" in n for n in changed)
    assert _losses(result.output_dir)[-1] < _losses(result.output_dir)[0]
