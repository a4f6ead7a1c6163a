"""``sc2tune serve FOLDER``: the folder is exported once to FOLDER/export/model-DTYPE.gguf and reused until a
file of the folder changes (the export itself is sc2tune.export's, tested in tests/export/)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import sc2tune.export
from sc2tune.serving.source import gguf_for


def test_a_folder_is_exported_once_and_again_after_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def export_gguf(path, out, *, dtype, force):
        calls.append((Path(path), Path(out), dtype))
        Path(out).write_bytes(b"GGUF stand-in")
        return Path(out)

    monkeypatch.setattr(sc2tune.export, "export_gguf", export_gguf)
    folder = tmp_path / "merged"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    old = time.time() - 60
    os.utime(folder / "config.json", (old, old))
    first = gguf_for(folder, dtype="q8_0")
    assert first == folder / "export" / "model-q8_0.gguf" and calls == [(folder, first, "q8_0")]
    assert gguf_for(folder, dtype="q8_0") == first and len(calls) == 1  # reused
    later = time.time() + 5
    os.utime(folder / "config.json", (later, later))  # the folder changed after the export
    assert gguf_for(folder, dtype="q8_0") == first and len(calls) == 2
    assert gguf_for(first, dtype="f16") == first and len(calls) == 2  # a GGUF file is served as it is
