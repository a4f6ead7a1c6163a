"""The package's layering, stated as import-linter contracts in pyproject.toml and checked by ``lint-imports``.

Run here so that CI's one test command (the README line tagged ``# test-command``) checks the contracts.
The layers (top to bottom, sideways imports allowed within one) are those of ARCHITECTURE.md's table; a
second test breaks a copy of the package on purpose, once per contract, and checks that ``lint-imports``
notices, so no contract can silently become empty.
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


def run_lint(root: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the package under ``root`` against ``root/pyproject.toml`` (only the contracts with
    the ids ``contracts``, all when none), writing no cache."""
    env = {**os.environ, "PYTHONPATH": str(root), "NO_COLOR": "1"}
    chosen = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run([lint_imports(), "--no-cache", *chosen, str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept():
    result = run_lint(ROOT)
    assert result.returncode == 0, f"lint-imports found broken contracts:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


LATE = "\n\ndef _late() -> None:\n    {}  # noqa: F401\n"


@pytest.mark.parametrize("path, added, contract, reported", [
    # a function-level import of the commands layer from the ground layer
    ("errors.py", LATE.format("import sc2tune.commands"), "layers", "sc2tune.errors -> sc2tune.commands (l."),
    # a part that is in no layer
    ("newpart.py", "X = 1\n", "layers", "- sc2tune.newpart"),
    # two modules of one subpackage importing each other (data.prepare imports data.stats)
    ("data/stats.py", LATE.format("from sc2tune.data import prepare"), "no-cycles", "- .stats -> .prepare"),
    # generation reaching into the merge, although both are in one layer
    ("generation.py", LATE.format("from sc2tune.merging import adapter"), "generation-not-merging",
     "sc2tune.generation -> sc2tune.merging.adapter (l."),
    # the data package reaching for the model loader (a tokenizer and sc2tune.tokens are all it needs)
    ("data/fim.py", LATE.format("from sc2tune.modeling import load_model"), "data-not-modeling",
     "sc2tune.data.fim -> sc2tune.modeling (l."),
    # configs reaching for the built-in model's builder (which imports torch where it builds)
    ("configs.py", LATE.format("from sc2tune.tiny import tiny_config"), "configs-not-tiny",
     "sc2tune.configs -> sc2tune.tiny (l."),
])
def test_each_contract_reports_its_breakage(tmp_path: Path, path: str, added: str, contract: str, reported: str):
    """A copy of the package, broken on purpose: ``lint-imports`` fails that contract and names the import."""
    shutil.copytree(ROOT / "sc2tune", tmp_path / "sc2tune", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    broken = tmp_path / "sc2tune" / path
    with broken.open("a", encoding="utf-8") as file:
        file.write(added)

    result = run_lint(tmp_path, contract)
    assert result.returncode != 0, result.stdout
    assert reported in result.stdout, result.stdout


def test_the_contract_states_architecture_md_layers():
    """pyproject's layers, top to bottom, are ARCHITECTURE.md's table read bottom to top."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    stated = [set(re.split(r"\s*[:|]\s*", layer.strip())) for layer in layers]

    table = re.findall(r"^\| \d+ [^|]+\| (.+) \|$", (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"),
                       flags=re.MULTILINE)
    documented = [{name.strip("`/") for name in re.findall(r"`[^`]+`", row)} for row in table]
    assert stated == documented[::-1]


def test_configs_and_architectures_import_no_torch():
    """What validate and plan read (configs, layouts) stays torch-free at import, in a fresh interpreter."""
    code = "import sc2tune.configs, sc2tune.architectures; import sys; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
