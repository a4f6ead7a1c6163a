"""Generation and classification: modes, stopping, determinism, and adapter vs merged folders.

Stopping is tested with a "constant" tiny StarCoder2 whose final LayerNorm has zero weight, so every
position's hidden state is the norm's bias ``v`` and the untied lm_head (zero except one row ``10 v``)
always prefers one chosen token: greedy decoding then emits that token at every step.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForSequenceClassification, Starcoder2ForCausalLM

import sc2tune.generation as gen
from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.generation import (
    Sampling,
    classify,
    generate,
    infill,
    instruct,
    load_for_inference,
    split_cursor,
)
from sc2tune.merging import merge
from sc2tune.modeling import resolve_model_path
from sc2tune.tiny import load_bundled_tokenizer, tiny_config

warnings.filterwarnings("ignore")

GREEDY = Sampling(max_new_tokens=5, temperature=0)
TINY = "sc2tune/tiny-starcoder2"


def constant_model(folder: Path, token: str, *, max_positions: int | None = None) -> Path:
    """A tiny StarCoder2 whose greedy output is ``token`` at every step (reading at most ``max_positions``)."""
    tokenizer = load_bundled_tokenizer()
    (target,) = tokenizer.convert_tokens_to_ids([token])
    config = tiny_config()
    config.tie_word_embeddings = False
    if max_positions is not None:
        config.max_position_embeddings = max_positions
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


@pytest.fixture(scope="module")
def tiny() -> gen.InferenceModel:
    return load_for_inference(TINY)


def test_infill_returns_only_the_middle_and_stops_at_file_sep(tmp_path: Path):
    x_model = load_for_inference(constant_model(tmp_path / "x", "x"))
    assert infill(x_model, "def f(a):\n    ", "\n    return b\n", GREEDY) == "xxxxx"  # no prefix, no suffix
    assert generate(x_model, "print(", GREEDY) == "xxxxx"
    assert generate(x_model, "print(", Sampling(max_new_tokens=5, temperature=0, stop=("xxx",))) == ""
    sep_model = load_for_inference(constant_model(tmp_path / "sep", "<file_sep>"))
    assert infill(sep_model, "a = ", "\n", GREEDY) == ""  # stopped at once, stop token not printed
    eos_model = load_for_inference(constant_model(tmp_path / "eos", "<|endoftext|>"))
    assert infill(eos_model, "a = ", "\n", GREEDY) == ""
    assert generate(eos_model, "a = ", GREEDY) == ""


def test_fim_prompt_is_psm_with_literal_user_text(tiny: gen.InferenceModel, monkeypatch: pytest.MonkeyPatch):
    seen: dict = {}
    monkeypatch.setattr(gen, "_decode", lambda lm, ids, sampling, stops: seen.update(ids=ids, stops=stops) or [""])
    infill(tiny, "x = '<file_sep>'\n", "print(x)\n", GREEDY)
    tok = tiny.tokenizer
    expected = (tok.convert_tokens_to_ids(["<fim_prefix>"])
                + tok("x = '<file_sep>'\n", add_special_tokens=False, split_special_tokens=True)["input_ids"]
                + tok.convert_tokens_to_ids(["<fim_suffix>"]) + tok("print(x)\n", add_special_tokens=False)["input_ids"]
                + tok.convert_tokens_to_ids(["<fim_middle>"]))
    assert seen["ids"] == expected
    assert 6 not in seen["ids"][1:-1]  # the literal <file_sep> in the code stays text
    assert seen["stops"] == [0, 6]  # <|endoftext|>, <file_sep>


def test_fim_prompt_with_repository_context_is_the_training_layout(tiny: gen.InferenceModel,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """StarCoder2's repository FIM: the file's PATH\\nCODE is the FIM fragment, <file_sep> stays outside."""
    seen: dict = {}
    monkeypatch.setattr(gen, "_decode", lambda lm, ids, sampling, stops: seen.update(ids=ids) or [""])
    repo = gen.RepoContext("pkg/a.py", "proj", (("util.py", "X = 1\n"),))
    infill(tiny, "import util\n", "\nprint(y)\n", GREEDY, repo=repo)
    tok = tiny.tokenizer
    text = tok.decode(seen["ids"], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert text == ("<repo_name>proj<file_sep>util.py\nX = 1\n"
                    "<file_sep><fim_prefix>pkg/a.py\nimport util\n<fim_suffix>\nprint(y)\n<fim_middle>")
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    t = tok.convert_tokens_to_ids
    assert seen["ids"] == [t("<repo_name>"), *enc("proj"), t("<file_sep>"), *enc("util.py\n"), *enc("X = 1\n"),
                           t("<file_sep>"), t("<fim_prefix>"), *enc("pkg/a.py\n"), *enc("import util\n"),
                           t("<fim_suffix>"), *enc("\nprint(y)\n"), t("<fim_middle>")]
    infill(tiny, "    return 1\n", "", GREEDY, repo=gen.RepoContext("b.py"))  # no name: no <repo_name> header
    assert seen["ids"][:2 + len(enc("b.py\n"))] == [t("<file_sep>"), t("<fim_prefix>"), *enc("b.py\n")]


def test_greedy_is_deterministic_and_seeded_sampling_repeats(tiny: gen.InferenceModel):
    prompt = "def fibonacci(n):"
    assert generate(tiny, prompt, GREEDY) == generate(tiny, prompt, GREEDY)
    ids = tiny.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():  # greedy = argmax of plain transformers' logits, step by step
        for _ in range(5):
            ids = torch.cat([ids, tiny.model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    reference = tiny.tokenizer.decode(ids[0, -5:])
    assert generate(tiny, prompt, GREEDY) == reference
    seeded = Sampling(max_new_tokens=8, temperature=1.0, seed=11)
    assert generate(tiny, prompt, seeded) == generate(tiny, prompt, seeded)


def test_instruction_uses_the_runs_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    base = Path(resolve_model_path(TINY))
    from transformers import AutoModelForCausalLM

    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "recipe.yaml").write_text(yaml.safe_dump(
        {"task": "instruct", "data": {"train": "rows.jsonl", "template": "alpaca"}}))
    seen: dict = {}
    monkeypatch.setattr(gen, "_decode", lambda lm, ids, sampling, stops: seen.update(ids=ids) or ["ok"])
    lm = load_for_inference(tmp_path)  # a run folder: adapter/ inside
    assert lm.template == "alpaca"
    assert instruct(lm, "Reverse a list.", "[1, 2]", sampling=GREEDY) == "ok"
    alpaca = yaml.safe_load((Path(gen.__file__).parents[1] / "data_templates" / "alpaca.yaml").read_text())
    prompt = alpaca["prompt_input"].format(instruction="Reverse a list.", input="[1, 2]")
    assert lm.tokenizer.decode(seen["ids"]) == prompt
    assert prompt.endswith("### Response:")


def save_random_classifier_adapter(folder: Path, *, seed: int) -> None:
    """A two-label LoRA classifier on the tiny model with random (non-zero) B and score weights, saved to folder."""
    base = Path(resolve_model_path(TINY))
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, pad_token_id=4)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="SEQ_CLS"))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.normal_(0, 0.3)
    peft_model.save_pretrained(folder)


def test_classify_adapter_and_merged_agree(tmp_path: Path, capsys: pytest.CaptureFixture):
    save_random_classifier_adapter(tmp_path / "adapter", seed=0)
    (tmp_path / "adapter" / "labels.json").write_text(json.dumps({"0": "neg", "1": "pos"}))
    merge(tmp_path / "adapter", tmp_path / "merged", progress=False, verify=False)

    texts = ["def broken(:", "def fine(): return 1", "x"]
    from_adapter = classify(tmp_path / "adapter", texts)
    from_merged = classify(tmp_path / "merged", texts)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    for text, a, m in zip(texts, from_adapter, from_merged, strict=True):
        assert set(a.probabilities) == {"neg", "pos"}
        assert a.label == m.label
        with torch.no_grad():
            ref = torch.softmax(plain(**load_bundled_tokenizer()(text, return_tensors="pt")).logits, -1)[0]
        assert m.probabilities["pos"] == pytest.approx(float(ref[1]), abs=1e-5)
        assert a.probabilities["pos"] == pytest.approx(m.probabilities["pos"], abs=1e-4)

    (tmp_path / "texts.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
    assert main(["classify", str(tmp_path / "merged"), "--file", str(tmp_path / "texts.jsonl"), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["label"] for r in rows] == [p.label for p in from_merged]
    with pytest.raises(UserError, match="classifier"):
        generate(tmp_path / "merged", "x", GREEDY)


def test_classify_feeds_a_trained_classifier_its_training_layout(tmp_path: Path):
    """A run's classifier was trained on ``tokens[:max_length - 1] + [eos]`` (cut on the recipe's side): serving
    must feed the same ids, else the score head reads a token it never saw in training."""
    save_random_classifier_adapter(tmp_path / "adapter", seed=1)
    (tmp_path / "adapter" / "recipe.yaml").write_text(yaml.safe_dump(
        {"task": "classify", "model": {"head": "sequence-classification"},
         "data": {"train": "rows.jsonl", "max_length": 9, "truncation_side": "left"}}))
    merge(tmp_path / "adapter", tmp_path / "merged", progress=False, verify=False)

    tokenizer = load_bundled_tokenizer()
    texts = ["def fine(): return 1 + 2 + 3", "x"]
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    for text, prediction in zip(texts, classify(tmp_path / "merged", texts), strict=True):
        ids = tokenizer(text)["input_ids"][-8:] + [tokenizer.eos_token_id]  # left cut to 9 with eos last
        with torch.no_grad():
            ref = torch.softmax(plain(input_ids=torch.tensor([ids])).logits, -1)[0]
        assert list(prediction.probabilities.values()) == pytest.approx(ref.tolist(), abs=1e-5)


def test_cli_modes_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture):
    x_model = constant_model(tmp_path / "x", "x")
    (tmp_path / "code.py").write_text("def f():\n    <cursor>\n")
    assert main(["generate", str(x_model), "--file", str(tmp_path / "code.py"), "--temperature", "0",
                 "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out == "xxx\n"
    assert main(["generate", str(x_model), "--prompt", "a", "--prefix", "b"]) == 1
    assert "exactly one of" in capsys.readouterr().err
    assert main(["generate", str(x_model), "--instruction", "hi"]) == 1
    assert "template" in capsys.readouterr().err
    with pytest.raises(UserError, match="exactly one <cursor>"):
        split_cursor("a <cursor> b <cursor>")
    with pytest.raises(UserError, match="temperature"):
        Sampling(temperature=-1)
