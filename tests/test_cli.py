"""The CLI table, the README's claims about it, and the README's two set-up commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from sc2tune.cli import COMMANDS, build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_lists_exactly_the_cli_commands():
    documented = set(re.findall(r"^\| `sc2tune ([a-z-]+)", README, flags=re.M))
    assert documented == {c.name for c in COMMANDS}


def test_readme_has_the_two_setup_commands_ci_runs():
    main = [line for line in README.splitlines() if line.rstrip().endswith("# main-command")]
    test = [line for line in README.splitlines() if line.rstrip().endswith("# test-command")]
    assert len(main) == len(test) == 1
    for line in main + test:
        assert line.startswith("pip install torch==2.13.0 && "), "torch (CPU build) is installed first"
    assert "sc2tune quickstart" in main[0] and "pytest" in test[0]
    assert "# test-command" in (ROOT / ".ci" / "run").read_text()


def test_every_command_has_help():
    parser = build_parser()
    for command in COMMANDS:
        result = subprocess.run([sys.executable, "-m", "sc2tune", command.name, "--help"], capture_output=True,
                                text=True)
        assert result.returncode == 0, (command.name, result.stderr)
        assert command.name in result.stdout
    assert parser.prog == "sc2tune"


def test_unknown_command_is_an_argparse_error_not_a_traceback():
    result = subprocess.run([sys.executable, "-m", "sc2tune", "trian"], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "invalid choice" in result.stderr


def test_public_api_names_resolve():
    import sc2tune

    for name in sc2tune.__all__:
        assert getattr(sc2tune, name) is not None, name


def test_overrides_may_follow_options(tmp_path, run_cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("# t\ntask: fim\ndata:\n  train: x\n")
    result = run_cli("validate", str(recipe), "--print", "--schema-only", "train.lr=0.5")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.5" in result.stdout
    bad = run_cli("validate", str(recipe), "--bogus")
    assert bad.returncode == 2 and "unrecognized arguments: --bogus" in bad.stderr


def test_validate_checks_lora_targets_against_the_architecture(run_cli):
    recipe = ROOT / "recipes" / "quickstart" / "alpaca.yaml"
    result = run_cli("validate", str(recipe), "adapter.target_modules=[q_proj,gate_proj]")
    assert result.returncode == 2 and "gate_proj" in result.stderr and "c_fc" in result.stderr
    ok = run_cli("validate", str(ROOT / "recipes" / "starcoder2-7b" / "fim-qlora.yaml"))
    assert ok.returncode == 0 and "targets ok" in ok.stdout


def test_help_pages_show_meaningful_defaults(capsys):
    import pytest

    from sc2tune.cli import main

    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps to the terminal's width
    assert "tokens to generate at most (default: 128)" in out and "(default: 0.2)" in out
    assert "default: None" not in out and "default: False" not in out
