"""A hub id on a machine that cannot reach the hub: one clear error at once, naming the fixes."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants
from safetensors.torch import save_file

import sc2tune.hub as hub
from sc2tune.cli import main

ROOT = Path(__file__).parents[1]


@pytest.fixture
def unreachable_hub(monkeypatch: pytest.MonkeyPatch) -> str:
    """Hub mode on, pointed at a loopback port nothing listens on (no traffic leaves the machine)."""
    with socket.socket() as s:  # a free port, closed again: connecting to it is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    hub._reachable.cache_clear()
    yield endpoint
    hub._reachable.cache_clear()


def test_train_with_an_unreachable_hub_id_fails_at_once_with_the_fixes(
        unreachable_hub: str, tmp_path: Path, capsys: pytest.CaptureFixture):
    code = main(["train", str(ROOT / "recipes/quickstart/alpaca.yaml"), "model.name_or_path=bigcode/starcoder2-3b",
                 f"output_dir={tmp_path / 'run'}", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bigcode/starcoder2-3b" in err and unreachable_hub in err
    for fix in ("HF_HUB_OFFLINE=1", "local model folder", "sc2tune tiny-model"):
        assert fix in err
    assert len(err.strip().splitlines()) == 2  # the error and its hint: no retry warnings
    assert not (tmp_path / "run").exists()


def test_merge_with_an_unreachable_base_fails_at_once(unreachable_hub: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"base_model_name_or_path": "bigcode/starcoder2-7b", '
                                                 '"peft_type": "LORA", "r": 8, "lora_alpha": 16}')
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file({f"{prefix}.lora_A.weight": torch.zeros(8, 16), f"{prefix}.lora_B.weight": torch.zeros(16, 8)},
              str(adapter / "adapter_model.safetensors"))
    assert main(["merge", str(adapter), "--out", str(tmp_path / "merged")]) == 1
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err


def test_validate_and_plan_of_a_shipped_model_stay_offline(unreachable_hub: str, capsys: pytest.CaptureFixture):
    recipe = str(ROOT / "recipes/starcoder2-3b/alpaca-lora.yaml")
    assert main(["validate", recipe]) == 0  # bundled config: no hub needed
    assert main(["plan", recipe]) == 0


def test_offline_mode_is_never_probed(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "_reachable", lambda endpoint: pytest.fail("probed in offline mode"))
    hub.ensure_hub_reachable("bigcode/starcoder2-3b")


def test_train_reports_an_unreachable_hub_before_importing_the_training_stack(tmp_path: Path):
    """Whole process: the error comes before torch is imported (that import alone takes seconds)."""
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = ("import sys\nfrom sc2tune.cli import main\n"
              f"code = main(['train', {str(ROOT / 'recipes/quickstart/alpaca.yaml')!r}, "
              f"'model.name_or_path=bigcode/starcoder2-3b', 'output_dir={tmp_path / 'run'}'])\n"
              "print('exit', code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    env = {"PATH": "/usr/bin:/bin", "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "HF_HUB_OFFLINE=1" in out.stderr
    assert out.stdout.split() == ["exit", "1", "False", "False"]
