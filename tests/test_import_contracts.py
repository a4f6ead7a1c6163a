"""The package's layering, stated as import-linter contracts in pyproject.toml and checked by ``lint-imports``.

Run here so that CI's one test command (the README line tagged ``# test-command``) checks the contracts.
The layers (top to bottom, sideways imports allowed within one) are those of ARCHITECTURE.md's table; a
second test breaks a copy of the package on purpose and checks that ``lint-imports`` notices, so the
contracts cannot silently become empty.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).parents[1]


def lint_imports() -> str:
    """The ``lint-imports`` script of this interpreter's environment (installed by the ``test`` extra)."""
    beside = Path(sys.executable).with_name("lint-imports")
    found = str(beside) if beside.is_file() else shutil.which("lint-imports")
    if found is None:
        pytest.fail("lint-imports is not installed: pip install -e '.[test]' (it comes with import-linter)")
    return found


def run_lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``root`` against ``root/pyproject.toml``, writing no cache."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    return subprocess.run([lint_imports(), "--no-cache", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    result = run_lint(ROOT)
    assert result.returncode == 0, f"lint-imports found broken contracts:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path):
    """A function-level import of the commands layer from the ground layer must be reported, with its line."""
    shutil.copytree(ROOT / "sc2tune", tmp_path / "sc2tune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "sc2tune" / "errors.py"
    lines = errors.read_text(encoding="utf-8").splitlines()
    lines += ["", "", "def _upward() -> None:", "    import sc2tune.commands  # noqa: F401"]
    errors.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run_lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"sc2tune.errors -> sc2tune.commands (l.{len(lines)})" in result.stdout, result.stdout


def test_the_contract_states_architecture_md_layers():
    """pyproject's layers, top to bottom, are ARCHITECTURE.md's table read bottom to top."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    stated = [set(re.split(r"\s*[:|]\s*", layer.strip())) for layer in layers]

    table = re.findall(r"^\| \d+ [^|]+\| (.+) \|$", (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"),
                       flags=re.MULTILINE)
    documented = [{name.strip("`/") for name in re.findall(r"`[^`]+`", row)} for row in table]
    assert stated == documented[::-1]
