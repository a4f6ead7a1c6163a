"""A downloaded run folder cannot make sc2tune run its model's code: only the command line can."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sc2tune.cli import main


def hostile_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder whose recipe names a model with code that writes ``marker`` when imported."""
    marker = tmp_path / "code-ran"
    model = tmp_path / "evil-model"
    model.mkdir()
    (model / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n"
        "    model_type = 'evil'\n")
    (model / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_text("def f():\n    return 1\n" * 20)
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    recipe = {"model": {"name_or_path": str(model), "trust_remote_code": True}, "task": "fim",
              "data": {"train": str(code), "eval": 0.5}, "output_dir": str(run)}
    (run / "adapter" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    return run, marker


@pytest.mark.parametrize("command", [["eval", "{run}"], ["eval", "{run}/adapter"], ["data", "{run}/adapter/recipe.yaml"],
                                     ["generate", "{run}", "--prompt", "x"], ["classify", "{run}", "--text", "x"]])
def test_a_run_folder_cannot_turn_remote_code_on(tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]):
    run, marker = hostile_run(tmp_path)
    assert main([part.format(run=run) for part in command]) == 2
    err = capsys.readouterr().err
    assert "trust_remote_code" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert not marker.exists()


def test_generate_runs_the_models_code_only_with_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture):
    run, marker = hostile_run(tmp_path)
    config = run / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                  "target_modules": ["q_proj"]}))
    assert main(["generate", str(run), "--prompt", "x"]) == 2 and not marker.exists()
    main(["generate", str(run), "--prompt", "x", "--trust-remote-code"])  # the model itself is not loadable
    assert marker.exists()  # the command line said so: the recipe was accepted and the model's code ran
