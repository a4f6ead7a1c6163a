"""Streaming merge: merged logits against PEFT's adapter model, refusals, atomicity, file layout.

References are independent of the merge code: adapters are built with PEFT (``get_peft_model`` with
lora_B randomised so the update is not zero), the expected logits come from ``PeftModel`` on the base
(4-bit through bitsandbytes for QLoRA), and merged folders are loaded with plain transformers.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BitsAndBytesConfig,
    Starcoder2ForCausalLM,
)

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.merging import merge, stream
from sc2tune.merging.adapter import lora_scale
from sc2tune.merging.writer import OutTensor, ShardedWriter, parse_size, plan_shards
from sc2tune.modeling import resolve_model_path
from sc2tune.tiny import load_bundled_tokenizer, tiny_config

warnings.filterwarnings("ignore")

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]
IDS = torch.tensor([[1, 755, 3207, 26, 83, 731, 3, 1079, 2, 4650, 317, 2284, 0, 88]])


@pytest.fixture(scope="module")
def tied_base() -> Path:
    return Path(resolve_model_path("sc2tune/tiny-starcoder2"))


@pytest.fixture(scope="module")
def untied_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StarCoder2 with an untied lm_head (like the 15B), saved in several shards."""
    folder = tmp_path_factory.mktemp("untied-base")
    config = tiny_config()
    config.tie_word_embeddings = False
    torch.manual_seed(7)
    Starcoder2ForCausalLM(config).save_pretrained(folder, max_shard_size="20MB")
    load_bundled_tokenizer().save_pretrained(folder)
    return folder


def make_adapter(base: Path, out: Path, *, classifier: bool = False, seed: int = 0, recipe: dict | None = None,
                 quantized: bool = False, **lora: object) -> Path:
    """Save a PEFT LoRA adapter with random (non-zero) factors for ``base``."""
    kwargs: dict = {"dtype": torch.float32}
    if classifier:
        kwargs.update(num_labels=3, pad_token_id=4)
    if quantized:
        kwargs.update(quantization_config=_bnb(classifier), device_map={"": "cpu"})
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = loader.from_pretrained(base, **kwargs)
    lora.setdefault("target_modules", LINEARS)
    config = LoraConfig(r=lora.pop("r", 4), lora_alpha=lora.pop("lora_alpha", 8), lora_dropout=0.1,
                        task_type="SEQ_CLS" if classifier else "CAUSAL_LM", **lora)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(out)
    if recipe is not None:
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return out


def _bnb(classifier: bool) -> BitsAndBytesConfig:
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32,
                              llm_int8_skip_modules=["score"] if classifier else None)


def adapter_logits(base: Path, adapter: Path, *, classifier: bool = False, quantized: bool = False,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(adapter model logits, base logits) from PEFT, in eval mode."""
    kwargs: dict = {"dtype": dtype}
    if classifier:
        kwargs.update(num_labels=3, pad_token_id=4)
    if quantized:
        kwargs.update(quantization_config=_bnb(classifier), device_map={"": "cpu"})
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = PeftModel.from_pretrained(loader.from_pretrained(base, **kwargs), adapter).eval()
    for module in model.modules():  # bitsandbytes' bf16 CPU inference kernel is not what training computes
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        with_adapter = model(input_ids=IDS).logits.float()
        with model.disable_adapter():
            without = model(input_ids=IDS).logits.float()
    return with_adapter, without


def merged_logits(folder: Path, *, classifier: bool = False) -> torch.Tensor:
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = loader.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


# ---- numerics against PEFT ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["tied-linears", "tied-embeddings", "tied-ensure-tying", "saved-head", "untied-head",
                                  "patterns-rslora"])
def test_causal_merge_matches_adapter_logits(case: str, tied_base: Path, untied_base: Path, tmp_path: Path):
    base = untied_base if case == "untied-head" else tied_base
    lora: dict = {
        "tied-linears": {},
        "tied-embeddings": {"target_modules": ["q_proj", "c_proj", "lm_head", "embed_tokens"]},
        "tied-ensure-tying": {"target_modules": ["q_proj", "embed_tokens"], "ensure_weight_tying": True},
        "saved-head": {"target_modules": ["c_fc"], "modules_to_save": ["lm_head"]},
        "untied-head": {"target_modules": [*LINEARS, "lm_head"]},
        "patterns-rslora": {"use_rslora": True, "rank_pattern": {"c_fc": 8}, "alpha_pattern": {"o_proj": 3}},
    }[case]
    adapter = make_adapter(base, tmp_path / "adapter", **lora)
    result = merge(adapter, tmp_path / "merged", base=str(base), shard_size="15MB", verify=False, progress=False)
    expected, base_logits = adapter_logits(base, adapter)
    got = merged_logits(tmp_path / "merged")
    assert (got - expected).abs().max() < 1e-4
    assert (got - base_logits).abs().max() > 1e-2  # the update is really in
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["dtype"] == "float32" and "quantization_config" not in config
    stays_tied = case in ("tied-linears", "patterns-rslora", "tied-ensure-tying")
    assert config["tie_word_embeddings"] is stays_tied
    assert result.untied is (case in ("tied-embeddings", "saved-head"))
    assert (tmp_path / "merged" / "model.safetensors.index.json").is_file()  # several 15MB shards


def test_lora_scale_follows_peft_patterns(tied_base: Path):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LINEARS, use_rslora=False,
                        rank_pattern={"c_fc": 8, r"layers\.1\.self_attn\.q_proj": 2},
                        alpha_pattern={"o_proj": 3.0})
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tied_base), config)
    as_dict = config.to_dict()
    for name, module in model.base_model.model.named_modules():
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            assert lora_scale(as_dict, name) == (module.r["default"], pytest.approx(module.scaling["default"]))


def test_bf16_output_is_the_fp32_merge_rounded_once(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    merge(adapter, tmp_path / "merged", base=str(tied_base), dtype="bfloat16", verify=True, progress=False)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tied_base), adapter)
    exact = reference.merge_and_unload().state_dict()  # PEFT's merge in float32
    merged = load_file(tmp_path / "merged" / "model.safetensors")
    assert all(t.dtype == torch.bfloat16 for t in merged.values())
    for name, tensor in merged.items():
        ref = exact[name]
        # one rounding: within half a bfloat16 step (2^-8 relative) of the exact value, plus fp32 noise
        bound = ref.abs() * 2.0**-8 + 1e-6
        assert ((tensor.float() - ref).abs() <= bound).all(), name
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    provenance = json.loads((tmp_path / "merged" / "sc2tune_merge.json").read_text())
    assert provenance["verification"]["passed"]


def test_classifier_merge_keeps_the_trained_head(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter", classifier=True)
    (adapter / "labels.json").write_text(json.dumps(["bug", "feature", "question"]))
    result = merge(adapter, tmp_path / "merged", base=str(tied_base), progress=False)
    assert result.verification is not None and result.verification.passed
    expected, _ = adapter_logits(tied_base, adapter, classifier=True)
    got = merged_logits(tmp_path / "merged", classifier=True)
    assert got.shape == (1, 3)
    assert (got - expected).abs().max() < 1e-4
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["id2label"] == {"0": "bug", "1": "feature", "2": "question"}
    assert config["pad_token_id"] == 4
    assert config["architectures"] == ["Starcoder2ForSequenceClassification"]


@pytest.mark.parametrize("classifier", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_qlora_merges_into_the_nf4_round_trip(classifier: bool, tied_base: Path, tmp_path: Path):
    recipe = {"adapter": {"method": "qlora", "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True}},
              "model": {"dtype": "float32", "head": "sequence-classification" if classifier else "causal-lm"},
              "task": "classify" if classifier else "fim", "data": {"train": "code/"}}
    adapter = make_adapter(tied_base, tmp_path / "adapter", classifier=classifier, recipe=recipe, quantized=True)
    result = merge(adapter, tmp_path / "nf4", base=str(tied_base), progress=False)
    assert result.round_trip == "nf4" and result.verification is not None and result.verification.passed
    trained, _ = adapter_logits(tied_base, adapter, classifier=classifier, quantized=True)
    got = merged_logits(tmp_path / "nf4", classifier=classifier)
    assert (got - trained).abs().max() < 1e-4

    merge(adapter, tmp_path / "orig", base=str(tied_base), merge_into="original", verify=False, progress=False)
    on_original, _ = adapter_logits(tied_base, adapter, classifier=classifier)
    got_orig = merged_logits(tmp_path / "orig", classifier=classifier)
    assert (got_orig - on_original).abs().max() < 1e-4
    # the round trip matters: merging into the original weights is further from what was trained
    assert (got_orig - trained).abs().max() > 10 * (got - trained).abs().max()


# ---- refusals and atomicity --------------------------------------------------------------------


def test_refuses_a_folder_that_is_not_an_adapter(tmp_path: Path):
    (tmp_path / "notes").mkdir()
    with pytest.raises(UserError, match="not a PEFT adapter folder"):
        merge(tmp_path / "notes", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_an_adapter_for_another_shape(tied_base: Path, tmp_path: Path):
    other = tiny_config()
    other.hidden_size, other.intermediate_size = 64, 256
    torch.manual_seed(0)
    Starcoder2ForCausalLM(other).save_pretrained(tmp_path / "other")
    adapter = make_adapter(tmp_path / "other", tmp_path / "adapter")
    with pytest.raises(UserError, match="shape"):
        merge(adapter, tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_an_adapter_for_another_architecture(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    renamed = {k.replace("self_attn.q_proj", "attn.c_attn"): v for k, v in weights.items()}
    from safetensors.torch import save_file

    save_file(renamed, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="does not have"):
        merge(adapter, tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


def test_refuses_a_missing_base(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    with pytest.raises(UserError, match="not found"):
        merge(adapter, tmp_path / "out", base=str(tmp_path / "nowhere"), progress=False)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(UserError, match="does not name its base"):
        merge(adapter, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_existing_output_needs_overwrite_and_failures_leave_nothing(tied_base: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a previous model output: config.json + weights
    (out / "model.safetensors").write_bytes(b"old")
    (out / "keep.txt").write_text("old")
    with pytest.raises(UserError, match="already exists"):
        merge(adapter, out, base=str(tied_base), verify=False, progress=False)
    with pytest.raises(UserError, match="overlaps"):
        merge(adapter, adapter, base=str(tied_base), verify=False, overwrite=True, progress=False)

    calls = {"n": 0}
    real = stream.merge_tensor

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "merge_tensor", failing)
    with pytest.raises(UserError, match="disk filled up"):
        merge(adapter, out, base=str(tied_base), verify=False, overwrite=True, progress=False)
    assert (out / "keep.txt").read_text() == "old"  # the old output is untouched
    with pytest.raises(UserError, match="disk filled up"):
        calls["n"] = 0
        merge(adapter, tmp_path / "fresh", base=str(tied_base), verify=False, progress=False)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]  # no temporary folder left

    monkeypatch.setattr(stream, "merge_tensor", real)
    merge(adapter, out, base=str(tied_base), verify=False, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_untrained_adapter_is_refused_by_verification(tied_base: Path, tmp_path: Path):
    model = AutoModelForCausalLM.from_pretrained(tied_base)
    get_peft_model(model, LoraConfig(r=4, target_modules=LINEARS)).save_pretrained(tmp_path / "adapter")
    with pytest.raises(UserError, match="changes nothing"):
        merge(tmp_path / "adapter", tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


# ---- writer and CLI ----------------------------------------------------------------------------


def test_sharded_writer_round_trips_through_safetensors(tmp_path: Path):
    torch.manual_seed(0)
    tensors = {"a": torch.randn(10, 7), "b": torch.randn(3).to(torch.bfloat16),
               "c": torch.arange(6, dtype=torch.int64).reshape(2, 3), "d": torch.randn(40, 5).half()}
    plan = plan_shards([OutTensor(k, tuple(v.shape), v.dtype) for k, v in tensors.items()], 300)
    assert [len(s) for s in plan] == [2, 1, 1]  # 280+6 | 48 | 400 bytes (a bigger tensor gets its own)
    writer = ShardedWriter(tmp_path, plan)
    for k, v in tensors.items():
        writer.write(k, v)
    files = writer.close()
    loaded: dict[str, torch.Tensor] = {}
    for f in files:
        loaded.update(load_file(f))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["d"] == "model-00003-of-00003.safetensors"
    assert parse_size("2GB") == 2 * 10**9 and parse_size("1.5GiB") == 3 * 2**29
    with pytest.raises(UserError):
        parse_size("two gigs")


def test_cli_merge_and_clean_error(tied_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    assert main(["merge", str(adapter), "--out", str(tmp_path / "m"), "--base", str(tied_base),
                 "--no-verify", "--dtype", "float32"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["merge", str(adapter), "--out", str(tmp_path / "m"), "--base", str(tied_base)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err


def test_verification_without_any_tokenizer(tmp_path: Path):
    torch.manual_seed(1)
    Starcoder2ForCausalLM(tiny_config()).save_pretrained(tmp_path / "bare")  # weights and config only
    adapter = make_adapter(tmp_path / "bare", tmp_path / "adapter")
    result = merge(adapter, tmp_path / "merged", progress=False)  # base from adapter_config.json
    assert result.verification is not None and result.verification.passed
    assert result.verification.max_abs_diff < 1e-4
