"""End-to-end training on the built-in tiny model: learning, memorisation, PEFT compatibility, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from sc2tune.errors import UserError
from sc2tune.recipe import recipe_from_dict
from sc2tune.runs import RunFolder
from sc2tune.training import train

pytestmark = pytest.mark.slow

CODE_FILES = {
    "repo_a/util.py": "def clamp(x, lo, hi):\n    return max(lo, min(x, hi))\n",
    "repo_a/greet.py": "def greet(name):\n    return 'hello ' + name\n",
    "repo_b/area.py": "import math\n\n\ndef circle_area(r):\n    return math.pi * r * r\n",
}

ALPACA = [
    {"instruction": "Write a Python function that returns the square of x.", "input": "",
     "output": "def square(x):\n    return x * x"},
    {"instruction": "Reverse the given string in Python.", "input": "s = 'abc'", "output": "s[::-1]"},
]


def write_code(root: Path) -> Path:
    for rel, text in CODE_FILES.items():
        path = root / "code" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "code"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def fim_recipe(tmp_path: Path, **train) -> dict:
    return {
        "task": "fim",
        "adapter": {"r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"train": str(write_code(tmp_path)), "eval": None, "max_length": 128,
                 "fim": {"rate": 1.0, "spm_rate": 0.0}},
        "train": {"max_steps": 80, "batch_size": 3, "lr": 1e-2, "warmup_ratio": 0.0, "scheduler": "constant",
                  "logging_steps": 5, "save_steps": 1000, **train},
        "output_dir": str(tmp_path / "run"),
    }


def greedy_continuation(model, prompt_ids: list[int], max_new_tokens: int, eos: int) -> list[int]:
    """Plain transformers greedy decoding (independent of sc2tune's generation code)."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=eos, pad_token_id=4)
    return out[0, len(prompt_ids):].tolist()


def load_plain_peft(adapter_dir: Path, classify: bool = False):
    """Base + adapter through plain transformers + PEFT, as a user would load it."""
    from sc2tune.modeling import resolve_model_path

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base_path = resolve_model_path(config["base_model_name_or_path"])
    if classify:
        labels = json.loads((adapter_dir / "labels.json").read_text())
        base = AutoModelForSequenceClassification.from_pretrained(
            base_path, num_labels=len(labels), id2label={int(k): v for k, v in labels.items()}, pad_token_id=4)
    else:
        base = AutoModelForCausalLM.from_pretrained(base_path)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def test_fim_lora_memorises_infills_and_stops(tmp_path):
    """Train on a handful of FIM documents; the infill for a trained prefix+suffix is the trained middle + eos."""
    from sc2tune.data import build_datasets
    from sc2tune.modeling import ModelSource, load_tokenizer

    recipe = recipe_from_dict(fim_recipe(tmp_path))
    result = train(recipe, show_progress=False)
    assert result.adapter_dir is not None and (result.adapter_dir / "adapter_model.safetensors").is_file()

    tokenizer = load_tokenizer(ModelSource.from_recipe(recipe))
    rows = build_datasets(recipe, tokenizer, show_progress=False).train
    model = load_plain_peft(result.adapter_dir)
    middle_id = tokenizer.convert_tokens_to_ids("<fim_middle>")
    for row in rows:
        ids = row["input_ids"]
        cut = ids.index(middle_id) + 1
        prompt, expected = ids[:cut], ids[cut:]
        assert expected[-1] == tokenizer.eos_token_id
        got = greedy_continuation(model, prompt, len(expected) + 5, tokenizer.eos_token_id)
        assert got == expected, (tokenizer.decode(got), tokenizer.decode(expected))


def test_alpaca_lora_answers_trained_instruction_and_stops(tmp_path):
    from sc2tune.data import build_datasets
    from sc2tune.modeling import ModelSource, load_tokenizer

    recipe = recipe_from_dict({
        "task": "instruct",
        "adapter": {"r": 16, "alpha": 32, "dropout": 0.0},
        "data": {"train": str(write_jsonl(tmp_path / "a.jsonl", ALPACA)), "eval": None, "max_length": 256},
        "train": {"max_steps": 60, "batch_size": 2, "lr": 1e-2, "warmup_ratio": 0.0, "scheduler": "constant",
                  "save_steps": 1000},
        "output_dir": str(tmp_path / "run"),
    })
    result = train(recipe, show_progress=False)
    tokenizer = load_tokenizer(ModelSource.from_recipe(recipe))
    model = load_plain_peft(result.adapter_dir)
    for record in ALPACA:
        from sc2tune.data.templates import load_template

        template = load_template("alpaca")
        prompt_ids = tokenizer(template.render_prompt(record), add_special_tokens=False).input_ids
        got = greedy_continuation(model, prompt_ids, 60, tokenizer.eos_token_id)
        assert got[-1] == tokenizer.eos_token_id, "did not stop at eos"
        assert tokenizer.decode(got[:-1]) == record["output"]
    rows = build_datasets(recipe, tokenizer, show_progress=False).train
    for row in rows:  # the prompt is not trained, the response and eos are
        trained = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
        assert trained[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(trained[:-1]) in {r["output"] for r in ALPACA}


def test_peft_loads_the_adapter_with_the_same_logits_as_the_trained_model(tmp_path):
    recipe = recipe_from_dict(fim_recipe(tmp_path, max_steps=5, lr=1e-3))
    result = train(recipe, show_progress=False)
    ids = torch.tensor([[1, 563, 1167, 26, 3, 284, 2, 437, 0]])
    trained = result.model.eval()
    plain = load_plain_peft(result.adapter_dir)
    with torch.no_grad():
        a = trained(input_ids=ids).logits
        b = plain(input_ids=ids).logits
        with plain.disable_adapter():
            c = plain(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(b, c, atol=1e-4), "the adapter changed nothing"


def test_run_outputs(tmp_path):
    recipe = fim_recipe(tmp_path, max_steps=6, logging_steps=1, eval_steps=3)
    recipe["data"]["eval"] = 0.34
    result = train(recipe_from_dict(recipe), show_progress=False)
    out = result.output_dir
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "sc2tune/tiny-starcoder2"
    assert set(adapter_config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"}
    for name in ("recipe.yaml", "tokenizer.json"):
        assert (out / "adapter" / name).is_file()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert any("eval_loss" in r for r in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_eval"]["eval_loss"] > 0 and summary["train_tokens_per_second"] > 0
    assert (out / "loss.png").stat().st_size > 1000
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert not list((out / "checkpoints").glob(".staging*"))
    run = RunFolder(out)  # every entry of the run folder is one of the paths RunFolder names, at those names
    assert set(out.iterdir()) <= {run.adapter, run.checkpoints, run.metrics, run.summary, run.data_record, run.recipe,
                                  run.lock, run.loss_plot, run.tensorboard, run.engine}
    assert json.loads((out / "engine" / "rank-0.json").read_text())["process_index"] == 0
    assert run.rank_record(0) == out / "engine" / "rank-0.json" and run.checkpoint(6) == out / "checkpoints" / "checkpoint-6"
    with pytest.raises(UserError, match="--resume"):
        train(recipe_from_dict(recipe), show_progress=False)
    saved = (out / "adapter" / "recipe.yaml").read_text()
    assert f"train: {tmp_path / 'code'}" in saved, "data paths are saved absolute"


def test_leftover_logs_of_a_failed_run_are_not_appended_to(tmp_path):
    recipe = fim_recipe(tmp_path, max_steps=2, logging_steps=1)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / ".sc2tune-train.lock").touch()  # what every run writes first: the folder is a run's
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    with pytest.raises(UserError, match="metrics.jsonl"):
        train(recipe_from_dict(recipe), show_progress=False)
    result = train(recipe_from_dict(recipe), resume=True, show_progress=False)  # restarts in place
    lines = [json.loads(x) for x in (result.output_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [1, 2] and lines[0].get("loss") != 3.0


def test_unknown_target_module_lists_the_real_ones(tmp_path):
    recipe = fim_recipe(tmp_path, max_steps=1)
    recipe["adapter"]["target_modules"] = ["q_proj", "gate_proj"]
    with pytest.raises(UserError) as err:
        train(recipe_from_dict(recipe), show_progress=False)
    assert "gate_proj" in str(err.value) and "c_fc" in str(err.value)


def test_qlora_trains_on_cpu(tmp_path):
    recipe = fim_recipe(tmp_path, max_steps=8, lr=5e-3, logging_steps=1)
    recipe["adapter"]["method"] = "qlora"
    result = train(recipe_from_dict(recipe), show_progress=False)
    losses = [json.loads(x)["loss"] for x in (result.output_dir / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(x)]
    assert losses[-1] < losses[0]
    assert "method: qlora" in (result.adapter_dir / "recipe.yaml").read_text()


def test_full_fine_tuning_writes_a_model_folder(tmp_path):
    recipe = fim_recipe(tmp_path, max_steps=3, lr=1e-4)
    recipe["adapter"] = {"method": "full"}
    result = train(recipe_from_dict(recipe), show_progress=False)
    assert result.adapter_dir.name == "model"
    model = AutoModelForCausalLM.from_pretrained(result.adapter_dir)
    from sc2tune.modeling import resolve_model_path

    base = AutoModelForCausalLM.from_pretrained(resolve_model_path("sc2tune/tiny-starcoder2"))
    changed = [n for (n, p), (_, q) in zip(model.named_parameters(), base.named_parameters(), strict=True)
               if not torch.equal(p, q)]
    assert len(changed) > 10


def test_balanced_class_weights_are_inverse_frequency():
    from sc2tune.training.run import _class_weights

    recipe = recipe_from_dict({"task": "classify",
                               "data": {"train": "x"}, "train": {"class_weights": "balanced"}})
    weights = _class_weights(recipe, {"a": 6, "b": 2, "c": 4}, {0: "a", 1: "b", 2: "c"})
    # N / (K * n_c) = 12 / (3 * n_c)
    assert weights.tolist() == pytest.approx([12 / 18, 12 / 6, 12 / 12])
    explicit = recipe_from_dict({"task": "classify",
                                 "data": {"train": "x"}, "train": {"class_weights": [1.0, 2.0]}})
    with pytest.raises(UserError, match="2 weights for 3 labels"):
        _class_weights(explicit, None, {0: "a", 1: "b", 2: "c"})

