"""The public API: every exported name is what it says, whatever was imported before it."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
import types

import pytest

import sc2tune


@pytest.mark.parametrize("module", ["sc2tune", "sc2tune.runs", "sc2tune.architectures"])
def test_importing_sc2tune_does_not_import_torch(module: str):
    """The package and its light parts (folder layouts and metadata, module trees from config.json)."""
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_exported_names_stay_functions_after_every_submodule_is_imported():
    for info in pkgutil.walk_packages(sc2tune.__path__, "sc2tune."):
        if not info.name.rsplit(".", 1)[-1].startswith("_"):
            importlib.import_module(info.name)
    for name in sc2tune.__all__:
        value = getattr(sc2tune, name)
        assert not isinstance(value, types.ModuleType), f"sc2tune.{name} is the module {value.__name__}"
    assert callable(sc2tune.merge) and callable(sc2tune.generate) and callable(sc2tune.train)
