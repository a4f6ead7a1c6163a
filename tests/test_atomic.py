"""The atomic-write helper: stage, flush, rename; the old target survives a failed write; leftovers of killed
writers go; and no other module of the package renames anything by hand."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sc2tune import atomic

PACKAGE = Path(__file__).parents[1] / "sc2tune"


def _dead_pid() -> int:
    """The pid of a process that has exited (reaped), so no process of this host has it now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _record_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make ``os.fsync`` record the path of each descriptor it flushes (read back from /proc)."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_write_file_replaces_the_file_and_flushes_it_and_its_folder(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    target.write_text("old")
    synced = _record_fsyncs(monkeypatch)
    atomic.write_file(target, '{"new": 1}')
    assert target.read_text() == '{"new": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    # the staged file's data was flushed before the rename (under its staging name), then the folder after it
    staged = str(atomic.sibling(target))
    assert staged in synced and str(tmp_path) in synced
    assert synced.index(staged) < synced.index(str(tmp_path))


def test_a_write_that_fails_part_way_leaves_the_old_file_and_no_half_file(tmp_path):
    target = tmp_path / "metrics.jsonl"
    target.write_text("line 1\n")
    with pytest.raises(RuntimeError), atomic.staged_file(target) as staging:
        staging.write_text("half a li")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "line 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


@pytest.mark.parametrize("replace", [True, False])
def test_a_failed_write_keeps_the_old_folder_and_drops_the_staging(tmp_path, monkeypatch, replace):
    """replace=True: the flush fails (EIO) and nothing is published; replace=False: an existing folder is not
    replaced (the rename onto it fails)."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "a.txt").write_text("old")

    def fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    if replace:
        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output" if replace else None), \
            atomic.staged_dir(target, replace=replace) as staging:
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_dir_replaces_an_existing_folder_whole(tmp_path, monkeypatch):
    target = tmp_path / "report"
    target.mkdir()
    (target / "old-only.txt").write_text("old")
    synced = _record_fsyncs(monkeypatch)
    with atomic.staged_dir(target, replace=True) as staging:
        (staging / "sub").mkdir()
        (staging / "sub" / "results.json").write_text("{}")
        assert not (target / "sub").exists()  # nothing visible before the block ends
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["sub", "sub/results.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no staging, no old copy
    staged = atomic.sibling(target)
    assert str(staged / "sub" / "results.json") in synced and str(staged / "sub") in synced


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "adapter"
    target.mkdir()
    (target / "w").write_text("old")
    real = os.replace

    def replace(src, dst):
        if Path(dst) == target and "old-" not in Path(src).name:
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError), atomic.staged_dir(target, replace=True) as staging:
        (staging / "w").write_text("new")
    assert (target / "w").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_leftovers_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "data.json"
    host = socket.gethostname()
    dead = tmp_path / f".data.json.tmp-{host}-{_dead_pid()}"
    dead.write_text("half")
    dead_dir = tmp_path / f".data.json.tmp-{host}-{_dead_pid()}"
    dead_dir.mkdir()
    live = tmp_path / f".data.json.tmp-{host}-{os.getppid()}"  # our parent runs
    live.write_text("being written")
    other_host = tmp_path / f".data.json.tmp-elsewhere.example-{_dead_pid()}"
    other_host.write_text("not ours to judge")
    atomic.write_file(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data.json", live.name, other_host.name])


def _renames(tree: ast.AST) -> list[int]:
    """Lines of calls that rename a file: ``os.replace``/``os.rename``/``shutil.move``, or a one-argument
    ``X.rename(Y)`` / ``X.replace(Y)`` (``Path``'s; ``str.replace`` takes two arguments, ``dataclasses.replace``
    keywords)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else None
        name = node.func.attr
        by_module = (owner, name) in {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move")}
        by_path = name in ("rename", "replace") and len(node.args) == 1 and not node.keywords and owner != "dataclasses"
        if by_module or by_path:
            lines.append(node.lineno)
    return lines


def test_the_finder_sees_each_way_of_renaming():
    source = ("import os, shutil\nos.replace(a, b)\np.rename(q)\ntmp.replace(out)\nshutil.move(a, b)\n"
              "s.replace('a', 'b')\ndataclasses.replace(x, y=1)\n")
    assert _renames(ast.parse(source)) == [2, 3, 4, 5]


def test_only_the_atomic_module_renames_files():
    found = []
    for file in sorted(PACKAGE.rglob("*.py")):
        if file == PACKAGE / "atomic.py":
            continue
        found += [f"{file.relative_to(PACKAGE.parent)}:{line}" for line in _renames(ast.parse(file.read_text()))]
    assert found == [], "publish through sc2tune.atomic (staged_file, staged_dir, publish, move) instead"
