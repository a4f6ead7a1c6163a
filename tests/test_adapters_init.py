"""adapter.init (PiSSA, OLoRA, LoftQ) and adapter.loraplus_lr_ratio.

References are PEFT's: the saved adapter is loaded with ``PeftModel.from_pretrained`` on a freshly loaded
original base, and merges are compared with PEFT's ``merge_and_unload``. "Training" is a random move of A and B
(what an optimizer step does to them), so the checks cost seconds.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, TrainingArguments

from sc2tune.adapters import attach_adapter, keep_initial_adapter, save_converted_adapter
from sc2tune.errors import RecipeError, UserError
from sc2tune.merging import merge
from sc2tune.modeling import ModelSource, load_model, objective_for, resolve_model_path
from sc2tune.recipe import Recipe, recipe_from_dict, recipe_to_yaml
from sc2tune.training.trainer import Sc2Trainer

warnings.filterwarnings("ignore")

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]
IDS = torch.tensor([[1, 755, 3207, 26, 83, 731, 3, 1079, 2, 4650, 317, 2284, 0, 88]])
TINY = Path(resolve_model_path("sc2tune/tiny-starcoder2"))


def _recipe(**adapter: object) -> Recipe:
    return recipe_from_dict({"task": "fim", "data": {"train": "unused"}, "model": {"dtype": "float32"},
                             "adapter": {"target_modules": LINEARS, "dropout": 0.0, **adapter}})


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def _train_a_little(model: torch.nn.Module, seed: int = 0) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.add_(0.05 * torch.randn_like(param))


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_2", "olora"])
def test_residual_inits_are_saved_to_apply_to_the_original_base(init: str, tmp_path: Path):
    recipe = _recipe(init=init, r=4, alpha=8)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32))
    model = attach_adapter(load_model(ModelSource.of(recipe.model), pad_token_id=4), recipe)
    assert not torch.equal(model.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight,
                           AutoModelForCausalLM.from_pretrained(TINY).model.layers[0].self_attn.q_proj.weight)
    assert (_logits(model) - base_logits).abs().max() < 1e-3  # base residual + B0 A0 = W at step 0
    initial = keep_initial_adapter(model, recipe, tmp_path, main_process=True)
    assert initial is not None and (initial / "adapter_model.safetensors").is_file()
    _train_a_little(model)
    trained = _logits(model)
    assert (trained - base_logits).abs().max() > 1e-2

    model.save_pretrained(tmp_path / "raw")  # what a mid-run checkpoint holds: factors for the residual base
    with pytest.raises(UserError, match="residual base"):
        merge(tmp_path / "raw", tmp_path / "wrong", base=str(TINY), verify=False, progress=False)
    save_converted_adapter(model, tmp_path / "adapter", initial)
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["init_lora_weights"] is True  # rank 2r
    assert model.peft_config["default"].r == 4  # the live model is left as trained
    on_original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32),
                                            tmp_path / "adapter")
    assert (_logits(on_original) - trained).abs().max() < 1e-4 * max(1.0, float(trained.abs().max()))

    merge(tmp_path / "adapter", tmp_path / "merged", base=str(TINY), verify=False, progress=False)  # checked here
    exact = on_original.merge_and_unload().state_dict()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).state_dict()
    for name, tensor in merged.items():
        assert (tensor - exact[name]).abs().max() <= 1e-5 * max(1.0, float(exact[name].abs().max())), name


def _bnb() -> BitsAndBytesConfig:
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)


def _no_bf16_kernel(model: torch.nn.Module) -> None:
    for module in model.modules():  # bitsandbytes' bf16 CPU inference kernel is not what training computes
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@pytest.mark.slow
def test_loftq_starts_nearer_the_unquantised_model_and_merges(tmp_path: Path):
    recipe = _recipe(method="qlora", init="loftq", r=8, alpha=16)
    full = _logits(AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32))
    model = attach_adapter(load_model(ModelSource.from_recipe(recipe), pad_token_id=4), recipe)
    _no_bf16_kernel(model)
    start = _logits(model)
    with model.disable_adapter():
        four_bit = _logits(model)
    assert (start - full).abs().max() < (four_bit - full).abs().max()  # B0 A0 undoes part of the 4-bit error
    _train_a_little(model)
    trained = _logits(model)
    model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "adapter" / "recipe.yaml").write_text(recipe_to_yaml(recipe))

    original = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32, quantization_config=_bnb(),
                                                    device_map={"": "cpu"})
    loaded = PeftModel.from_pretrained(original, tmp_path / "adapter")
    _no_bf16_kernel(loaded)
    assert (_logits(loaded) - trained).abs().max() < 1e-5  # the usual 4-bit load of the original checkpoint

    result = merge(tmp_path / "adapter", tmp_path / "merged", base=str(TINY), progress=False)
    assert result.round_trip == "nf4" and result.verification is not None and result.verification.passed
    got = _logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32))
    assert (got - trained).abs().max() < 1e-4 * max(1.0, float(trained.abs().max()))


def test_loraplus_gives_lora_b_ratio_times_the_learning_rate(tmp_path: Path):
    recipe = _recipe(loraplus_lr_ratio=16)
    model = attach_adapter(load_model(ModelSource.of(recipe.model), pad_token_id=4), recipe)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.01, report_to=[],
                             use_cpu=True)
    trainer = Sc2Trainer(model=model, args=args, objective=objective_for("fim"), pad_token_id=4,
                         loraplus_lr_ratio=recipe.adapter.loraplus_lr_ratio)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(id(p) in lr_of for _, p in trained)
    for name, param in trained:
        assert lr_of[id(param)] == pytest.approx(1.6e-3 if "lora_B" in name else 1e-4), name


@pytest.mark.parametrize(("adapter", "keys"), [
    ({"method": "full", "init": "pissa"}, ["adapter.init", "adapter.method"]),
    ({"method": "full", "loraplus_lr_ratio": 16}, ["adapter.loraplus_lr_ratio", "adapter.method"]),
    ({"method": "qlora", "init": "olora"}, ["adapter.init", "adapter.method"]),
    ({"init": "pissa_niter_4", "use_dora": True}, ["adapter.init", "adapter.use_dora"]),
    ({"init": "loftq"}, ["adapter.init", "adapter.method"]),
    ({"method": "qlora", "init": "loftq", "use_dora": True}, ["adapter.init", "adapter.use_dora"]),
])
def test_invalid_combinations_name_both_keys(adapter: dict, keys: list[str]):
    with pytest.raises(RecipeError) as err:
        _recipe(**adapter)
    assert all(key in str(err.value) for key in keys), str(err.value)


def test_init_names_are_checked():
    assert _recipe(init="pissa_niter_16").adapter.init == "pissa_niter_16"
    with pytest.raises(RecipeError, match="adapter.init"):
        _recipe(init="pissa_niter_0")
