"""Models, adapters, tokenizers and configs are loaded in one module, sc2tune.modeling: every ``X.from_pretrained(...)``
call in the package's code is there (docstrings showing users the plain transformers calls do not count)."""

from __future__ import annotations

import ast
from pathlib import Path

import sc2tune

PACKAGE = Path(sc2tune.__file__).parent

#: Calls allowed outside sc2tune.modeling, each with why: the bundled tokenizer (ground layer, below modeling)
#: and a hub config read for ``validate`` / ``plan`` (no model, and configs.py must not import the loader), and the
#: prepared-data key's fingerprint of the recipe's own tokenizer files (local files only: the data package must not
#: import the loader, an import-linter contract).
ALLOWED = {("tiny.py", "AutoTokenizer"), ("configs.py", "AutoConfig"), ("data/prepare.py", "AutoTokenizer")}


def from_pretrained_calls(source: str) -> list[tuple[str, int]]:
    """(receiver, line) of each ``receiver.from_pretrained(...)`` call in ``source``."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "from_pretrained":
            calls.append((ast.unparse(node.func.value), node.lineno))
    return calls


def test_the_finder_sees_calls_and_ignores_docstrings():
    code = '"""AutoTokenizer.from_pretrained("x")"""\nm = peft.PeftModel.from_pretrained(base, "a")\nf(x).from_pretrained(1)\n'
    assert from_pretrained_calls(code) == [("peft.PeftModel", 2), ("f(x)", 3)]


def test_from_pretrained_is_called_in_sc2tune_modeling_alone():
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        rel = file.relative_to(PACKAGE).as_posix()
        if rel == "modeling.py":
            continue
        found += [f"{rel}:{line} {who}.from_pretrained" for who, line in from_pretrained_calls(file.read_text())
                  if (rel, who) not in ALLOWED]
    assert found == [], "load models, adapters, tokenizers and configs through sc2tune.modeling"
    assert from_pretrained_calls((PACKAGE / "modeling.py").read_text())  # the loader is where the calls went
