"""`sc2tune eval code --model RUN --out DIR`: the run's models on the same problems, one column each.

Scores are checked by hand (exact match, edit similarity, paired differences); the end-to-end run uses a
LoRA run made with plain PEFT (random B, ``merged/`` from PEFT's own ``merge_and_unload``): the base's
samples must equal plain transformers' one-prompt-at-a-time greedy infills, the merged model's the adapter's.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.evaluation.codeeval import CodeEvalResult
from sc2tune.evaluation.compare import ModelComparison, ModelScores, model_names, text_scores
from sc2tune.evaluation.problems import Problem, Sample, load_problems

P = {t: Problem(t, "def f():\n", "assert True", "f", suffix="\n", canonical_solution="    return 1") for t in "ab"}


def result(per_task: dict[str, tuple[int, int]]) -> CodeEvalResult:
    tasks = {t: {"n": n, "c": c} for t, (n, c) in per_task.items()}
    score = sum(c / n for n, c in per_task.values()) / len(per_task)
    return CodeEvalResult({"pass@1": score}, tasks, [], "none", {}, ci95={"pass@1": [0.0, 1.0]})


def test_text_scores_by_hand():
    samples = [Sample("a", "  return 1 "), Sample("a", "    return 2"), Sample("b", "")]
    means, ci95, per_task, per_sample = text_scores(P, samples)
    # a: exact 1 (stripped equal) and 0; edit 1 - 3/12 (two spaces in, one out) and 1 - 1/12; b: empty vs 12 chars
    assert per_sample[0] == {"exact_match": 1.0, "edit_similarity": pytest.approx(1 - 3 / 12)}
    assert per_task["a"]["edit_similarity"] == pytest.approx(((1 - 3 / 12) + (1 - 1 / 12)) / 2)
    assert per_task["b"] == {"exact_match": 0.0, "edit_similarity": 0.0}
    assert means["exact_match"] == pytest.approx(0.25)  # (0.5 + 0) / 2: tasks weigh the same
    assert ci95["exact_match"][0] <= 0.25 <= ci95["exact_match"][1]
    assert text_scores({"x": Problem("x", "p", "t", "e")}, [Sample("x", "c")])[0] == {}  # no middle, no score


def test_summary_keys_and_paired_differences():
    base = ModelScores("base", [], result({"a": (1, 0), "b": (1, 0)}), *text_scores(P, [Sample("a", ""), Sample("b", "")]))
    tuned = ModelScores("adapter", [], result({"a": (1, 1), "b": (1, 0)}),
                        *text_scores(P, [Sample("a", "    return 1"), Sample("b", "")]))
    comparison = ModelComparison("run", "p", {"base": base, "adapter": tuned})
    summary = comparison.summary()
    assert summary["model"] == "adapter" and summary["pass@1"] == 0.5  # the trained model's keys at the top
    assert set(summary["models"]) == {"base", "adapter"}
    assert set(summary["models"]["base"]["ci95"]) == {"pass@1", "exact_match", "edit_similarity"}
    diff = summary["differences"]["adapter-base"]
    assert diff["pass@1"]["value"] == pytest.approx(0.5)
    assert diff["exact_match"]["value"] == pytest.approx(0.5)
    assert diff["edit_similarity"]["value"] == pytest.approx(0.5)
    lo, hi = diff["pass@1"]["ci95"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0
    figures = comparison.tracker_figures()  # what goes to the run's wandb / mlflow / trackio
    assert figures["eval_code/adapter/pass@1"] == 0.5 and figures["eval_code/base/exact_match"] == 0.0
    assert figures["eval_code/adapter-base/edit_similarity"] == pytest.approx(0.5)


def folder(**kw) -> SimpleNamespace:
    base = {"adapter_dir": None, "full_dir": None, "merged_dir": None, "recipe": object(), "path": Path("r")}
    return SimpleNamespace(**{**base, **kw})


def test_model_names():
    assert model_names(None, folder(adapter_dir=Path("a"))) == ["base", "adapter"]
    assert model_names(None, folder(full_dir=Path("m"))) == ["base", "trained"]  # a full fine-tune
    assert model_names(None, folder(merged_dir=Path("r"), recipe=None)) == ["model"]  # a plain model folder
    assert model_names("merged,base", folder(adapter_dir=Path("a"), merged_dir=Path("m"))) == ["merged", "base"]
    with pytest.raises(UserError, match="has no merged model"):
        model_names("base,merged", folder(adapter_dir=Path("a")))
    with pytest.raises(UserError, match="has no trained model"):
        model_names("trained", folder(adapter_dir=Path("a")))
    with pytest.raises(UserError, match="unknown model 'lora'"):
        model_names("lora", folder(adapter_dir=Path("a")))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tokenizer) -> Path:
    from sc2tune.modeling import ModelSource, load_model
    from sc2tune.recipe import load_recipe, recipe_to_yaml

    tmp = tmp_path_factory.mktemp("coderun")
    (tmp / "code").mkdir()
    (tmp / "code" / "a.py").write_text("def f():\n    return 1\n")
    recipe_file = tmp / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({"task": "fim", "data": {"train": str(tmp / "code")},
                                           "output_dir": str(tmp / "run")}))
    recipe = load_recipe(recipe_file)
    torch.manual_seed(0)
    model = load_model(ModelSource.of(recipe.model), pad_token_id=tokenizer.pad_token_id)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "c_fc"],
                                                  init_lora_weights=False))
    run = Path(recipe.output_dir)
    peft_model.save_pretrained(run / "adapter")
    tokenizer.save_pretrained(run / "adapter")
    (run / "adapter" / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    peft_model.merge_and_unload().save_pretrained(run / "merged")
    tokenizer.save_pretrained(run / "merged")
    return run


def plain_infill(model_dir: str, tokenizer, problem: Problem, new: int) -> str:
    """transformers alone: <fim_prefix>P<fim_suffix>S<fim_middle>, greedy, stop at <|endoftext|>/<file_sep>."""
    from transformers import AutoModelForCausalLM

    t = tokenizer.convert_tokens_to_ids
    enc = lambda s: tokenizer(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]  # noqa: E731
    ids = torch.tensor([[t("<fim_prefix>"), *enc(problem.prompt), t("<fim_suffix>"), *enc(problem.suffix),
                         t("<fim_middle>")]])
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    stops = [t("<|endoftext|>"), t("<file_sep>")]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                         eos_token_id=stops, pad_token_id=t("<fim_pad>"))[0, ids.shape[1]:].tolist()
    out = next((out[:i] for i, x in enumerate(out) if x in stops), out)
    return tokenizer.decode(out)


@pytest.mark.slow
def test_base_adapter_merged_in_one_command(lora_run: Path, tmp_path: Path, tokenizer, tiny_model_dir, capsys):
    out = tmp_path / "report"
    code = main(["eval", "code", "--problems", "humaneval-infilling-single-line", "--model", str(lora_run),
                 "--models", "base,adapter,merged", "--limit", "2", "--max-new-tokens", "6", "--temperature", "0",
                 "--k", "1", "--timeout", "5", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(summary["models"]) == ["base", "adapter", "merged"] and summary["model"] == "adapter"
    assert set(summary["differences"]) == {"adapter-base", "merged-base"}
    assert summary["tasks"] == 2 and summary["samples"] == 2
    files = {p.name for p in out.iterdir()}
    assert files == {"results.json", "report.md"} | {f"{k}-{m}.jsonl" for k in ("samples", "results")
                                                      for m in ("base", "adapter", "merged")}
    samples = {m: [json.loads(x) for x in (out / f"samples-{m}.jsonl").read_text().splitlines()]
               for m in ("base", "adapter", "merged")}
    problems = load_problems("humaneval-infilling-single-line")
    first = list(problems.values())[:2]
    assert [s["task_id"] for s in samples["base"]] == [p.task_id for p in first]
    assert [s["completion"] for s in samples["base"]] == [plain_infill(tiny_model_dir, tokenizer, p, 6) for p in first]
    assert samples["merged"] == samples["adapter"] != samples["base"]
    results = [json.loads(x) for x in (out / "results-adapter.jsonl").read_text().splitlines()]
    for row, problem in zip(results, first, strict=True):
        assert row["exact_match"] == float(row["completion"].strip() == problem.canonical_solution.strip())
        assert row["status"] in {"passed", "failed", "timeout", "error"}
    report = (out / "report.md").read_text()
    assert "| metric | base | adapter | merged |" in report and "exact match" in report


def test_bad_input_is_a_clear_error(lora_run: Path, tmp_path: Path, capsys):
    args = ["eval", "code", "--problems", "humaneval-infilling-single-line", "--limit", "1"]
    assert main([*args, "--model", str(lora_run)]) != 0
    assert "give --out DIR" in capsys.readouterr().err
    assert main([*args, "--model", str(lora_run), "--models", "base,merged,lora", "--out", str(tmp_path)]) != 0
    assert "unknown model 'lora'" in capsys.readouterr().err
    assert main([*args, "--samples", str(tmp_path / "s.jsonl"), "--models", "base"]) != 0
    assert "--models compares the models of --model RUN" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*args, "--model", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'empty'}: not a model" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
    other = tmp_path / "p.jsonl"  # a samples file given as the problems
    other.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    return 1\n"}) + "\n")
    assert main(["eval", "code", "--problems", str(other), "--model", str(lora_run), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert f"{other}:1: 'prompt' must be a string (missing)" in err and "Traceback" not in err
    assert main(["eval", "code", "--problems", "humaneval", "--samples", str(other), "--limit", "3"]) == 0
    capsys.readouterr()
    other.write_text(json.dumps({"task_id": "HumanEval/999", "completion": "x"}) + "\n")
    assert main(["eval", "code", "--problems", "humaneval", "--samples", str(other)]) != 0
    err = capsys.readouterr().err
    assert f"{other}:1: task_id 'HumanEval/999' is not in the problems file" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()
