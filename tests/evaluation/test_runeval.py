"""`sc2tune eval RUN`: base / adapter / merged side by side on the recipe's held-out data.

The run folders are made here with plain PEFT on the built-in tiny model (no training needed): a LoRA
adapter with random (non-zero) B matrices, and ``merged/`` from PEFT's own ``merge_and_unload``. The
merged model must score like the adapter (an independent implementation of the same function) and
unlike the base.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from peft import LoraConfig, TaskType, get_peft_model
from PIL import Image

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.evaluation.runeval import parse_models, resolve_run
from sc2tune.modeling import ModelSource, load_model
from sc2tune.recipe import load_recipe, recipe_to_yaml

CODE = [
    "import os\n\n\ndef walk(root):\n    for name in os.listdir(root):\n        yield os.path.join(root, name)\n",
    "def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.append(x)\n",
    "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n",
]


def _make_run(tmp: Path, recipe_data: dict, tokenizer, *, classify: bool) -> Path:
    recipe_file = tmp / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe_data))
    recipe = load_recipe(recipe_file)
    run = Path(recipe.output_dir)
    torch.manual_seed(0)
    id2label = {0: "neg", 1: "pos"} if classify else None
    model = load_model(ModelSource.of(recipe.model, labels=id2label), pad_token_id=tokenizer.pad_token_id)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "c_fc", "c_proj"],
                        init_lora_weights=False, modules_to_save=["score"] if classify else None,
                        task_type=TaskType.SEQ_CLS if classify else TaskType.CAUSAL_LM)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(run / "adapter")
    tokenizer.save_pretrained(run / "adapter")
    (run / "adapter" / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    if classify:
        (run / "adapter" / "labels.json").write_text(json.dumps({"0": "neg", "1": "pos"}))
    peft_model.merge_and_unload().save_pretrained(run / "merged")
    tokenizer.save_pretrained(run / "merged")
    lines = [{"step": s, "loss": 11.0 - 0.2 * s} for s in range(1, 11)] + [{"step": 10, "eval_loss": 9.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return recipe_file


@pytest.fixture(scope="module")
def fim_run(tmp_path_factory, tokenizer) -> Path:
    tmp = tmp_path_factory.mktemp("fimrun")
    (tmp / "code").mkdir()
    for i, text in enumerate(CODE * 2):
        (tmp / "code" / f"m{i}.py").write_text(text)
    data = {"task": "fim", "data": {"train": str(tmp / "code"), "eval": 0.5, "max_length": 64},
            "train": {"batch_size": 2}, "output_dir": str(tmp / "run")}
    return _make_run(tmp, data, tokenizer, classify=False)


@pytest.fixture(scope="module")
def classify_run(tmp_path_factory, tokenizer) -> Path:
    tmp = tmp_path_factory.mktemp("clsrun")
    rows = [{"text": t, "label": "pos" if i % 2 else "neg"} for i, t in enumerate(CODE * 3)]
    (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = {"task": "classify", "model": {"head": "sequence-classification", "num_labels": 2},
            "data": {"train": str(tmp / "train.jsonl"), "eval": 0.5, "max_length": 64},
            "output_dir": str(tmp / "run")}
    return _make_run(tmp, data, tokenizer, classify=True)


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_fim_run_three_models_side_by_side(fim_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    code = main(["eval", str(fim_run), "--json", "--out", str(out), "--infill-examples", "2",
                 "--infill-max-new-tokens", "6"])
    assert code == 0
    summary = _last_json(capsys)
    models = summary["models"]
    assert list(models) == ["base", "adapter", "merged"]
    assert models["merged"]["loss"] == pytest.approx(models["adapter"]["loss"], rel=1e-4)
    assert abs(models["base"]["loss"] - models["adapter"]["loss"]) > 1e-3
    assert models["adapter"]["tokens"] == models["base"]["tokens"] > 0
    for row in models.values():
        assert row["perplexity"] == pytest.approx(np.exp(row["loss"]), rel=1e-6)
        assert 0.0 <= row["infill_span_edit_similarity"] <= 1.0 and "infill_lines_exact_match" in row
        lo, hi = row["ci95"]["infill_span_edit_similarity"]
        assert lo <= row["infill_span_edit_similarity"] <= hi
    diff = summary["differences"]["adapter-base"]["infill_span_edit_similarity"]
    assert diff["value"] == pytest.approx(models["adapter"]["infill_span_edit_similarity"]
                                          - models["base"]["infill_span_edit_similarity"])
    assert set(summary["differences"]) == {"adapter-base", "merged-base"}
    assert {p.name for p in out.iterdir()} == {"results.json", "report.md", "loss.png"}
    report = (out / "report.md").read_text()
    assert "| metric | base | adapter | merged |" in report and "infill span: edit similarity" in report
    img = np.asarray(Image.open(out / "loss.png").convert("L"))
    assert img.shape == (360, 600) and img.std() > 10


def test_classify_run_confusion_and_scores(classify_run: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "report"
    assert main(["eval", str(classify_run), "--models", "adapter,merged", "--json", "--out", str(out)]) == 0
    summary = _last_json(capsys)
    results = json.loads((out / "results.json").read_text())
    adapter, merged = results["models"]["adapter"], results["models"]["merged"]
    assert adapter["labels"] == ["neg", "pos"]
    assert sum(map(sum, adapter["confusion"])) == adapter["examples"] == summary["eval_rows"]
    assert adapter["confusion"] == merged["confusion"]
    correct = adapter["confusion"][0][0] + adapter["confusion"][1][1]
    assert adapter["accuracy"] == pytest.approx(correct / adapter["examples"])
    assert (out / "confusion-adapter.png").is_file() and (out / "confusion-merged.png").is_file()
    assert "## adapter: per class" in (out / "report.md").read_text()


def test_run_resolution_and_errors(fim_run: Path, tmp_path: Path, capsys) -> None:
    run = resolve_run(fim_run)  # a recipe stands for its output_dir
    assert run.merged_dir is not None and run.adapter_dir == run.run_dir / "adapter"
    assert resolve_run(run.run_dir / "adapter").run_dir == run.run_dir
    with pytest.raises(UserError, match="unknown model 'lora'"):
        parse_models("base,lora", run)
    assert main(["eval", str(tmp_path)]) != 0
    assert "is not a training run" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.yaml")]) != 0


def test_a_folder_without_a_recipe_is_a_clear_error(tmp_path: Path) -> None:
    """evaluate_run is public: a folder read without its recipe (a bare PEFT adapter) is told what to give."""
    import json

    from sc2tune.errors import UserError
    from sc2tune.evaluation.runeval import evaluate_run
    from sc2tune.runs import read_trained

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({
        "base_model_name_or_path": "sc2tune/tiny-starcoder2", "peft_type": "LORA", "r": 4, "lora_alpha": 8,
        "target_modules": ["q_proj"]}))
    with pytest.raises(UserError, match="has no saved recipe") as caught:
        evaluate_run(read_trained(adapter), ["trained"], show_progress=False)
    assert str(adapter) in str(caught.value) and "output_dir" in caught.value.hint
