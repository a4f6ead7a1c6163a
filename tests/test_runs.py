"""Trained folders (sc2tune.runs): layouts told apart, metadata read typed, models loaded as PEFT loads them.

The run folder is made here as ``sc2tune train`` lays it out, with plain PEFT on the built-in tiny model (a
LoRA adapter with random non-zero B), ``merged/`` from PEFT's own ``merge_and_unload``. References are
PEFT's and transformers' own readers and loaders, never sc2tune's.
"""

from __future__ import annotations

import json
import os
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from sc2tune.cli import main
from sc2tune.errors import RecipeError, UserError
from sc2tune.recipe import TINY_MODEL, load_recipe, recipe_to_yaml
from sc2tune.runs import folder_kind, load_trained, model_source, read_trained

IDS = torch.tensor([[1, 17, 300, 42, 5, 999, 123, 7]])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: str, tokenizer) -> Path:
    """OUTPUT/{adapter,merged,checkpoints}, recipe.yaml and data.json, as training and merging write them."""
    tmp = tmp_path_factory.mktemp("run")
    (tmp / "recipe.yaml").write_text(yaml.safe_dump({"task": "fim", "data": {"train": str(tmp / "code")},
                                                     "adapter": {"r": 4}, "output_dir": str(tmp / "run")}))
    recipe = load_recipe(tmp / "recipe.yaml")
    out = Path(recipe.output_dir)
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "c_fc"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(out / "adapter")
    tokenizer.save_pretrained(out / "adapter")
    config_file = out / "adapter" / "adapter_config.json"  # training names the base as the user did
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "base_model_name_or_path": TINY_MODEL}))
    for folder in (out, out / "adapter"):
        (folder / "recipe.yaml").write_text(recipe_to_yaml(recipe))
    (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (out / "data.json").write_text("{}")
    peft_model.merge_and_unload().save_pretrained(out / "merged")
    tokenizer.save_pretrained(out / "merged")
    return out


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def test_each_layout_is_told_apart(run: Path, tmp_path: Path):
    assert (folder_kind(run), folder_kind(run / "adapter"), folder_kind(run / "merged")) == ("run", "adapter", "model")
    assert folder_kind(run / "checkpoints") is None and folder_kind(tmp_path / "missing") is None
    folder = read_trained(run)
    assert (folder.kind, folder.run_dir, folder.adapter_dir, folder.merged_dir, folder.full_dir) == \
        ("run", run, run / "adapter", run / "merged", None)
    inside = read_trained(run / "adapter")
    assert (inside.kind, inside.run_dir, inside.merged_dir) == ("adapter", run, run / "merged")
    merged = read_trained(run / "merged")
    assert (merged.kind, merged.adapter_dir, merged.recipe, merged.classifier) == ("model", None, None, False)

    full = tmp_path / "full"  # adapter.method full: OUTPUT/model holds the whole trained model
    (full / "model").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (full / "model" / name).symlink_to(run / "merged" / name)
    (full / "model" / "recipe.yaml").write_text((run / "recipe.yaml").read_text())
    assert folder_kind(full) == "run"
    assert (read_trained(full).full_dir, read_trained(full / "model").run_dir) == (full / "model", full)


def test_saved_metadata_comes_back_typed(run: Path, tiny_model_dir: str):
    folder = read_trained(run)
    assert folder.recipe == load_recipe(run / "recipe.yaml")  # the Recipe training saved, validated again
    assert folder.adapter_config == PeftConfig.from_pretrained(str(run / "adapter"))
    assert folder.adapter_config.r == 4 and folder.labels is None
    assert folder.base_name == TINY_MODEL and folder.base_dir() == Path(tiny_model_dir)


def test_adapter_base_and_merged_load_as_peft_and_transformers_do(run: Path, tiny_model_dir: str):
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_ref = _logits(plain)
    adapter_ref = _logits(PeftModel.from_pretrained(plain, str(run / "adapter")).eval())
    assert (adapter_ref - base_ref).abs().max() > 1e-3  # the adapter changes the model

    adapter = load_trained(run, "adapter", dtype="float32", device="cpu")
    assert isinstance(adapter.model, PeftModel) and not adapter.model.training and not adapter.classifier
    assert torch.allclose(_logits(adapter.model), adapter_ref, atol=1e-6, rtol=0)
    assert adapter.tokenizer.pad_token == "<fim_pad>"
    base = load_trained(run, "base", dtype="float32", device="cpu")
    assert torch.allclose(_logits(base.model), base_ref, atol=1e-6, rtol=0)
    merged = load_trained(run / "adapter", "merged", dtype="float32", device="cpu")
    assert (_logits(merged.model) - adapter_ref).abs().max() < 1e-4


def _copy_adapter(run: Path, to: Path) -> Path:
    to.mkdir()
    for file in (run / "adapter").iterdir():
        if file.is_file():
            (to / file.name).write_bytes(file.read_bytes())
    return to


def test_hostile_folders_get_errors_naming_the_file(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    missing = _copy_adapter(run, tmp_path / "missing")
    (missing / "adapter_config.json").unlink()
    with pytest.raises(UserError, match=r"missing is not a PEFT adapter folder: it has no adapter_config\.json"):
        read_trained(missing)

    garbled = _copy_adapter(run, tmp_path / "garbled")
    (garbled / "adapter_config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"garbled/adapter_config\.json: not JSON"):
        read_trained(garbled)
    (garbled / "adapter_config.json").write_text('{"r": 4}')
    with pytest.raises(UserError, match=r"garbled/adapter_config\.json: no peft_type"):
        read_trained(garbled)

    huge = _copy_adapter(run, tmp_path / "huge")
    with open(huge / "adapter_config.json", "r+b") as handle:
        handle.truncate(64 << 20)  # sparse: costs no disk
    with pytest.raises(UserError, match=r"huge/adapter_config\.json: 67,108,864 bytes"):
        read_trained(huge)

    linked = _copy_adapter(run, tmp_path / "linked")
    (linked / "recipe.yaml").unlink()
    (linked / "recipe.yaml").symlink_to("/dev/zero")
    with pytest.raises(UserError, match=r"linked/recipe\.yaml \(a symlink\): not a regular file"):
        read_trained(linked)

    not_recipe = _copy_adapter(run, tmp_path / "notrecipe")
    (not_recipe / "recipe.yaml").write_text(yaml.safe_dump({"task": "fim", "lr": 1}))
    with pytest.raises(RecipeError, match=r"notrecipe/recipe\.yaml") as err:
        read_trained(not_recipe)
    assert "restore it" in str(err.value)

    assert main(["generate", str(garbled), "--prompt", "x"]) == 1  # the CLI: the message, no traceback
    err = capsys.readouterr().err
    assert "no peft_type" in err and "Traceback" not in err


def test_a_saved_remote_code_recipe_needs_the_command_lines_word(run: Path, tmp_path: Path):
    folder = _copy_adapter(run, tmp_path / "remote")
    recipe = yaml.safe_load((folder / "recipe.yaml").read_text())
    recipe["model"]["trust_remote_code"] = True
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="trust_remote_code"):
        read_trained(folder)
    confirmed = read_trained(folder, ["model.trust_remote_code=true"])
    assert confirmed.recipe is not None and confirmed.recipe.model.trust_remote_code
    assert os.path.samefile(confirmed.adapter_dir, folder)
    assert confirmed.trust_remote_code and model_source(confirmed, "adapter", dtype="auto", labels=None).trust_remote_code


def test_one_model_source_per_model_of_a_run(run: Path, tiny_model_dir: str):
    """Each model of a run folder is one ModelSource, decided from the folder and the caller's word: the base as
    the recipe loaded it with the adapter on top, the merged folder as it is; remote code only when said."""
    folder = read_trained(run)
    adapter = model_source(folder, "adapter", dtype="float32", labels=None)
    assert (os.path.samefile(adapter.name_or_path, tiny_model_dir), os.path.samefile(adapter.adapter, run / "adapter"),
            adapter.dtype, adapter.quant, adapter.head, adapter.trust_remote_code) == (True, True, "float32", None,
                                                                                       "causal-lm", False)
    assert model_source(folder, "base", dtype="auto", labels=None).adapter is None
    merged = model_source(folder, "merged", dtype="bfloat16", labels=None)
    assert (os.path.samefile(merged.name_or_path, run / "merged"), merged.adapter, merged.attn) == (True, None, None)
    assert read_trained(run, trust_remote_code=True).trust_remote_code and not folder.trust_remote_code
    with pytest.raises(FrozenInstanceError):
        merged.trust_remote_code = True  # type: ignore[misc]
