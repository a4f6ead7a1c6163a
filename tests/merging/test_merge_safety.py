"""Hostile or broken input around the merge: what --overwrite may delete, leftovers of killed merges,
a full disk, NaN adapters, and the honest check of a QLoRA adapter merged into the original weights."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from merge_helpers import peft_adapter, peft_logits, plain_logits, synthetic_base
from safetensors.torch import load_file, save_file

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.merging import describe_merge, merge, writer
from sc2tune.merging.output import OWNER

warnings.filterwarnings("ignore")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_base(tmp_path_factory.mktemp("base") / "base", dtype=torch.float32)


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return peft_adapter(base, tmp_path_factory.mktemp("adapter") / "adapter")


def test_overwrite_refuses_a_folder_that_is_not_a_model_output(base: Path, adapter: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture):
    out = tmp_path / "home"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("{}")  # config.json alone is not a model output
    with pytest.raises(UserError, match="not a model folder"):
        merge(adapter, out, base=str(base), verify=False, overwrite=True, progress=False)
    assert main(["merge", str(adapter), "--out", str(out), "--base", str(base), "--overwrite", "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "not a model folder" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "src").is_dir()

    merge(adapter, tmp_path / "merged", base=str(base), verify=False, progress=False)
    merge(adapter, tmp_path / "merged", base=str(base), verify=False, overwrite=True, progress=False)  # ours: ok


def test_a_killed_merge_leaves_a_folder_the_next_merge_removes(base: Path, adapter: Path, tmp_path: Path):
    out = tmp_path / "merged"
    script = textwrap.dedent(f"""
        import os, signal
        from sc2tune.merging import stream
        from sc2tune.merging import merge
        real, n = stream.merge_tensor, [0]
        def dying(*args, **kwargs):
            n[0] += 1
            if n[0] == 12:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        stream.merge_tensor = dying
        merge({str(adapter)!r}, {str(out)!r}, base={str(base)!r}, verify=False, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".merged.tmp-*"))
    assert len(left) == 1 and (left[0] / OWNER).is_file() and not out.exists()
    live = tmp_path / ".other.tmp-live"  # a merge still running (this process): not ours to remove
    live.mkdir()
    (live / OWNER).write_text(f"{os.getpid()}@{os.uname().nodename}")
    foreign = tmp_path / ".cache.tmp-x"  # matches the pattern but has no owner file: not ours
    foreign.mkdir()

    result = merge(adapter, out, base=str(base), verify=False, progress=False)
    assert not left[0].exists() and live.is_dir() and foreign.is_dir()
    assert any("interrupted merge" in n and str(left[0]) in n for n in result.notes)
    assert "interrupted merge" in describe_merge(result)


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


def test_an_adapter_with_nan_weights_is_refused_naming_the_tensor(base: Path, adapter: Path, tmp_path: Path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((adapter / "adapter_config.json").read_text())
    weights = load_file(adapter / "adapter_model.safetensors")
    key = next(k for k in sorted(weights) if k.endswith("layers.1.mlp.c_fc.lora_B.weight"))
    weights[key] = weights[key].clone()
    weights[key][3, 1] = float("nan")
    save_file(weights, broken / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"'base_model\.model\.model\.layers\.1\.mlp\.c_fc\.lora_B\.weight' holds 1 NaN"):
        merge(broken, tmp_path / "out", base=str(base), progress=False)
    assert not (tmp_path / "out").exists()


def test_qlora_merged_into_original_is_checked_against_the_model_as_trained(base: Path, tmp_path: Path):
    adapter = peft_adapter(base, tmp_path / "qlora", quantized=True)
    recipe = {"adapter": {"method": "qlora", "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True}},
              "model": {"dtype": "float32"}, "task": "fim", "data": {"train": "code/"}}
    (adapter / "recipe.yaml").write_text(json.dumps(recipe))  # JSON is YAML
    result = merge(adapter, tmp_path / "orig", base=str(base), merge_into="original", progress=False)
    v = result.verification
    assert v is not None and v.passed and v.trained_diff is not None and v.trained_top1 is not None
    # the figure reported is the distance to the 4-bit base + adapter, computed here with PEFT directly
    ids = torch.randint(0, 512, (1, 24), generator=torch.Generator().manual_seed(0))
    trained = peft_logits(base, adapter, ids, quantized=True)
    got = plain_logits(tmp_path / "orig", ids)
    assert (got - trained).abs().max() > 1e-2  # merging into the original weights is not the trained model
    assert v.trained_diff > 1e-2 and v.trained_diff > 100 * v.reference_diff
    text = describe_merge(result)
    assert "as trained" in text and "what merging into the original weights costs" in text
    assert any("original (unquantised) weights" in n for n in result.notes)
    provenance = json.loads((tmp_path / "orig" / "sc2tune_merge.json").read_text())
    assert provenance["verification"]["trained_diff"] == pytest.approx(v.trained_diff)
