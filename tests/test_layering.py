"""The package's layers, read from its import statements (function-level imports included).

From the ground up: errors, recipe, metrics, reporting, hub, tiny, sizes -> architectures, tokenizer_files, configs,
modeling, adapters, runs -> data, planning -> training, merging, generation -> evaluation, demo -> commands, cli.
An import only ever goes down (or sideways within a layer), the top-level parts import each other without
cycles, and generation reads trained folders through ``runs``, never through the merge's internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "sc2tune"

LAYERS = [
    {"errors", "recipe", "metrics", "reporting", "hub", "tiny", "sizes"},
    {"architectures", "tokenizer_files", "configs", "modeling", "adapters", "runs"},
    {"data", "planning"},
    {"training", "merging", "generation"},
    {"evaluation", "demo"},
    {"commands", "cli", "__main__", "__init__"},
]
LAYER = {part: level for level, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str | None:
    """``sc2tune.data.fim`` -> ``data``; None outside the package."""
    pieces = module.split(".")
    return pieces[1] if pieces[0] == "sc2tune" and len(pieces) > 1 else None


def imports() -> list[tuple[str, str, int]]:
    """(importing part, imported part, line) for every sc2tune import in the package."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        here = part_of(".".join(rel.parts)) or "__init__"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                there = part_of(name)
                if there is not None and there != here:
                    found.append((f"{rel}", there, node.lineno))
    return found


def test_every_part_is_in_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p / "__init__.py").is_file())}
    assert parts - {"assets"} <= set(LAYER), parts - set(LAYER)


@pytest.mark.parametrize("module, imported, line", imports())
def test_imports_go_down(module: str, imported: str, line: int):
    here = part_of(module.replace("/", ".")) or "__init__"
    if here == "__init__":  # the package's face lazily re-exports every layer
        return
    assert LAYER[imported] <= LAYER[here], f"{module}.py:{line} imports sc2tune.{imported} (a higher layer)"


def in_cycles(graph: dict[str, set[str]]) -> list[str]:
    """The nodes of ``graph`` from which an import path leads back to themselves."""

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    return sorted(node for node in graph if reaches(node, node, {node}))


def test_no_cycles_between_parts():
    graph: dict[str, set[str]] = {}
    for module, imported, _ in imports():
        here = part_of(module.replace("/", ".")) or "__init__"
        if here != "__init__":
            graph.setdefault(here, set()).add(imported)

    cycles = in_cycles(graph)
    assert not cycles, f"parts in an import cycle: {cycles}"


def test_generation_never_imports_merging():
    """Loading a trained folder is ``sc2tune.runs``' job; generation has no business inside the merge."""
    found = [(module, line) for module, imported, line in imports()
             if module == "sc2tune/generation" and imported == "merging"]
    assert not found, f"sc2tune/generation.py imports sc2tune.merging at lines {[line for _, line in found]}"


def module_graph() -> dict[str, set[str]]:
    """sc2tune module -> the sc2tune modules it imports (``from pkg import name`` counts a submodule ``name``)."""
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
               for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        here = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names]
            else:
                continue
            graph.setdefault(here, set()).update(n for n in names if n in modules and n != here)
    return graph


def test_no_cycles_between_modules():
    """No two modules import each other, directly or around a loop (plan <-> suggest did). A package's face
    (``__init__``) re-exports its own modules, so edges into a package's own face are left out."""
    graph = module_graph()
    for here, targets in graph.items():
        graph[here] = {t for t in targets if not here.startswith(t + ".")}

    cycles = in_cycles(graph)
    assert not cycles, f"modules in an import cycle: {cycles}"
