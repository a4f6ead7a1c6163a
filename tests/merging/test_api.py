"""The merge face (``sc2tune.merging.api.merge`` and ``sc2tune merge``), end to end: merged logits against
PEFT's adapter model, the classifier head, and the refusals the face makes (no base, an adapter that changes
nothing, a full disk)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, Starcoder2ForCausalLM

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.merging import merge, writer
from sc2tune.tiny import load_bundled_tokenizer, tiny_config

from .merge_helpers import LINEARS, adapter_logits, make_adapter, merged_logits


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


def test_refuses_a_missing_base(tied_base: Path, tmp_path: Path):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    with pytest.raises(UserError, match="not found"):
        merge(adapter, tmp_path / "out", base=str(tmp_path / "nowhere"), progress=False)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(UserError, match="does not name its base"):
        merge(adapter, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_untrained_adapter_is_refused_by_verification(tied_base: Path, tmp_path: Path):
    model = AutoModelForCausalLM.from_pretrained(tied_base)
    get_peft_model(model, LoraConfig(r=4, target_modules=LINEARS)).save_pretrained(tmp_path / "adapter")
    with pytest.raises(UserError, match="changes nothing"):
        merge(tmp_path / "adapter", tmp_path / "out", base=str(tied_base), progress=False)
    assert not (tmp_path / "out").exists()


def test_disk_full_is_a_clear_error_and_leaves_nothing(base: Path, adapter: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture):
    calls = {"n": 0}
    real = writer.ShardedWriter._emit

    def full(self, data):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(writer.ShardedWriter, "_emit", full)
    with pytest.raises(UserError, match="disk filled up"):
        merge(adapter, tmp_path / "merged", base=str(base), verify=False, progress=False)
    assert list(tmp_path.iterdir()) == []
    calls["n"] = 0
    assert main(["merge", str(adapter), "--out", str(tmp_path / "m"), "--base", str(base), "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "disk filled up" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr("sc2tune.merging.api.shutil.disk_usage", lambda _: SimpleNamespace(free=1000))
    with pytest.raises(UserError, match="not enough disk space"):
        merge(adapter, tmp_path / "merged", base=str(base), verify=False, progress=False)


def test_cli_merge_and_clean_error(tied_base: Path, tmp_path: Path, capsys: pytest.CaptureFixture):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    assert main(["merge", str(adapter), "--out", str(tmp_path / "m"), "--base", str(tied_base),
                 "--no-verify", "--dtype", "float32"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main(["merge", str(adapter), "--out", str(tmp_path / "m"), "--base", str(tied_base)]) == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "Traceback" not in err


def test_a_bad_merge_into_is_refused_before_anything_is_read(tmp_path: Path):
    with pytest.raises(UserError, match="merge_into must be 'quantized' or 'original', not 'nf4'"):
        merge(tmp_path / "no-such-adapter", tmp_path / "out", merge_into="nf4")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
