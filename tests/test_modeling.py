"""Bundled tokenizer, pad-token policy and the built-in tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sc2tune.errors import UserError
from sc2tune.modeling import (
    ModelSource,
    default_target_modules,
    load_model,
    load_tokenizer,
    local_process_index,
    objective_for,
    running_under_fsdp,
)
from sc2tune.recipe import ModelSpec, recipe_from_dict
from sc2tune.tokens import special_tokens, token_id

SHARED_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "starcoder2-tokenizer"

SPECIALS = ["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<repo_name>", "<file_sep>"]


def test_bundled_tokenizer_special_ids(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIALS] == list(range(7))
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token_id == 0


def test_pad_token_is_fim_pad_not_eos(tokenizer):
    assert tokenizer.pad_token == "<fim_pad>"
    assert tokenizer.pad_token_id == 4 != tokenizer.eos_token_id


def test_bundled_tokenizer_has_no_pad_of_its_own():
    from sc2tune.tiny import load_bundled_tokenizer

    assert load_bundled_tokenizer().pad_token is None


@pytest.mark.skipif(not SHARED_TOKENIZER.is_dir(), reason="shared tokenizer not beside the checkout")
def test_bundled_tokenizer_is_the_shared_one(tokenizer):
    reference = AutoTokenizer.from_pretrained(str(SHARED_TOKENIZER))
    text = "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)  # 1234\n"
    assert tokenizer(text).input_ids == reference(text).input_ids


@pytest.mark.parametrize(
    "code",
    [
        "def f(x):\n\treturn x ** 2\n",
        "fn main() { println!(\"héllo, wörld ✓\"); }\n",
        "    indented\r\n  trailing spaces   \n\n\n",
        "<fim_prefix>literal special text is kept<fim_suffix>",
    ],
)
def test_tokenizer_round_trips_code(tokenizer, code):
    ids = tokenizer(code, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == code


def test_digits_are_split_one_by_one(tokenizer):
    ids = tokenizer("12345", add_special_tokens=False).input_ids
    assert len(ids) == 5


def test_special_tokens_by_name(tokenizer):
    ids = special_tokens(tokenizer)
    assert (ids.eos, ids.fim_prefix, ids.fim_middle, ids.fim_suffix, ids.fim_pad, ids.repo_name, ids.file_sep) == (
        0, 1, 2, 3, 4, 5, 6)


def test_missing_special_token_is_a_clear_error(tokenizer):
    with pytest.raises(UserError, match="no '<fim_nothing>' token"):
        token_id(tokenizer, "<fim_nothing>")


def test_tiny_model_architecture(tiny_model_dir):
    config = json.loads((Path(tiny_model_dir) / "config.json").read_text())
    assert config["model_type"] == "starcoder2"
    assert config["vocab_size"] == 49152
    assert config["bos_token_id"] == config["eos_token_id"] == 0
    assert config["tie_word_embeddings"] is True


def test_tiny_model_is_deterministic():
    from sc2tune.tiny import build_tiny_model

    a, b = build_tiny_model(), build_tiny_model()
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_tiny_model_forward_equals_transformers_own_load(tokenizer, tiny_model_dir):
    # its speed is measured in bench/tiny_forward.py, not here
    model = load_model(ModelSource(), pad_token_id=tokenizer.pad_token_id).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = tokenizer("def add(a, b):\n    return a + b\n", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits
        expected = reference(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152)
    assert torch.allclose(logits, expected, atol=1e-5)
    assert model.config.pad_token_id == 4


def test_tiny_model_default_lora_targets_exist():
    model = load_model(ModelSource())
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    assert set(default_target_modules("starcoder2")) <= names
    assert not {"gate_proj", "up_proj", "down_proj"} & names


def test_classification_head(tokenizer):
    model = load_model(ModelSource(head="sequence-classification", labels={0: "neg", 1: "pos", 2: "meh"}),
                       pad_token_id=tokenizer.pad_token_id)
    assert model.score.out_features == 3
    assert model.config.id2label == {0: "neg", 1: "pos", 2: "meh"}
    batch = tokenizer(["a = 1", "def long_function_name(x):\n    pass"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 3)


def test_unknown_architecture_needs_explicit_targets():
    with pytest.raises(UserError, match="adapter.target_modules"):
        default_target_modules("llama")


def test_cli_tiny_model_loads_in_plain_transformers(tmp_path, run_cli):
    out = tmp_path / "tiny"
    result = run_cli("tiny-model", str(out))
    assert result.returncode == 0, result.stderr
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "Starcoder2ForCausalLM"
    assert tok.convert_tokens_to_ids("<fim_middle>") == 2
    again = run_cli("tiny-model", str(out))
    assert again.returncode != 0 and "--overwrite" in again.stderr and "Traceback" not in again.stderr


def test_fim_recipe_needs_fim_tokens(tmp_path):
    """A local tokenizer without <fim_prefix> passes for instruct (it has <fim_pad>) but not for fim."""
    from sc2tune.modeling import check_tokenizer
    from sc2tune.tiny import TOKENIZER_DIR

    data = json.loads((TOKENIZER_DIR / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != "<fim_prefix>"]
    del data["model"]["vocab"]["<fim_prefix>"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}))
    spec = ModelSpec(name_or_path=str(tmp_path))
    assert "tokenizer ok" in check_tokenizer(spec, "instruct")
    with pytest.raises(UserError, match="<fim_prefix>"):
        check_tokenizer(spec, "fim")
    assert "not checked" in check_tokenizer(ModelSpec(name_or_path="bigcode/starcoder2-3b"), "fim")


@pytest.mark.parametrize(("task", "head", "loss", "per_document"), [
    ("instruct", "causal-lm", "token-cross-entropy", True),
    ("fim", "causal-lm", "token-cross-entropy", True),
    ("classify", "sequence-classification", "class-cross-entropy", False),
])
def test_objective_of_each_task(task, head, loss, per_document):
    objective = objective_for(task)
    assert (objective.head, objective.loss, objective.per_document_attention) == (head, loss, per_document)


def test_distributed_state_without_a_launcher(monkeypatch):
    for name in ("ACCELERATE_USE_FSDP", "LOCAL_RANK", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert running_under_fsdp() is False and local_process_index() == 0
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` sets for an FSDP config
    assert running_under_fsdp() is True


def test_a_tokenizer_with_its_own_code_is_refused_naming_the_flag(tmp_path: Path):
    """A tokenizer whose tokenizer_config.json names its own code (auto_map) loads only with the user's say;
    without it the error names --trust-remote-code and the code never ran (it would write a marker)."""
    import shutil

    from sc2tune.tiny import ASSETS

    folder = tmp_path / "tok"
    shutil.copytree(ASSETS / "tokenizer", folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(auto_map={"AutoTokenizer": ["own.OwnTokenizer", None]}, tokenizer_class="OwnTokenizer")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (folder / "own.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                                   "from transformers import PreTrainedTokenizerFast\n"
                                   "class OwnTokenizer(PreTrainedTokenizerFast):\n    pass\n")
    with pytest.raises(UserError, match="its own Python code") as err:
        load_tokenizer(ModelSource(str(folder)))
    assert "--trust-remote-code" in (err.value.hint or "") and not marker.exists()
    tokenizer = load_tokenizer(ModelSource(str(folder), trust_remote_code=True))
    assert type(tokenizer).__name__ == "OwnTokenizer" and marker.exists()


def test_a_recipes_model_source_is_decided_from_its_sections():
    """The head from the task, classes from model.num_labels, dtype and QLoRA's 4-bit NF4 from the recipe."""
    recipe = recipe_from_dict({"task": "classify", "model": {"num_labels": 3, "dtype": "float32"},
                               "adapter": {"method": "qlora"}, "data": {"train": "x.jsonl"}})
    source = ModelSource.from_recipe(recipe)
    assert (source.head, dict(source.labels or {}), source.dtype, source.trust_remote_code) == (
        "sequence-classification", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, "float32", False)
    assert source.quant is not None and (source.quant.bits, source.quant.quant_type) == (4, "nf4")
    assert ModelSource.of(recipe.model, labels={0: "no", 1: "yes"}).labels == {0: "no", 1: "yes"}
    assert ModelSource.from_recipe(recipe_from_dict({"task": "fim", "data": {"train": "x"}})).labels is None
