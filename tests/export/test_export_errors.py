"""Bad input to ``sc2tune export``: a clear message, a non-zero exit, no traceback, nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sc2tune.errors import UserError
from sc2tune.export.api import export_gguf


def no_output(folder: Path) -> bool:
    return not any(p.suffix == ".gguf" or ".gguf." in p.name for p in folder.iterdir())


def test_a_folder_that_is_no_model(tmp_path: Path, run_cli) -> None:
    (tmp_path / "notes").mkdir()
    result = run_cli("export", str(tmp_path / "notes"), "--out", str(tmp_path / "x.gguf"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not a model, merged, adapter or run folder" in result.stderr
    assert no_output(tmp_path)


def test_an_unknown_dtype(tiny_dir: Path, tmp_path: Path, run_cli) -> None:
    result = run_cli("export", str(tiny_dir), "--out", str(tmp_path / "x.gguf"), "--dtype", "q9")
    assert result.returncode != 0 and "Traceback" not in result.stderr and "q9" in result.stderr
    with pytest.raises(UserError, match="unknown --dtype 'q9'"):
        export_gguf(tiny_dir, tmp_path / "x.gguf", dtype="q9")
    assert no_output(tmp_path)


def test_an_existing_file_needs_force(tiny_dir: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "model.gguf"
    out.write_text("keep me")
    result = run_cli("export", str(tiny_dir), "--out", str(out), "--dtype", "f32")
    assert result.returncode == 1 and "exists" in result.stderr and "--force" in result.stderr
    assert out.read_text() == "keep me"
    assert run_cli("export", str(tiny_dir), "--out", str(out), "--dtype", "f32", "--force").returncode == 0
    assert out.read_bytes()[:4] == b"GGUF"


def test_a_folder_as_out(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is a folder"):
        export_gguf(tiny_dir, tmp_path)


def test_a_classifier_is_refused(tiny_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "classifier"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["Starcoder2ForSequenceClassification"], num_labels=2)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="sequence classifier"):
        export_gguf(folder, tmp_path / "x.gguf")
    assert no_output(tmp_path)


@pytest.mark.parametrize("missing", ["gguf", "llama_cpp"])
def test_a_missing_serve_extra_names_it_before_any_work(tiny_dir: Path, tmp_path: Path, monkeypatch,
                                                        missing: str) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))
    dtype = "q4_k_m" if missing == "llama_cpp" else "f32"
    with pytest.raises(UserError, match=rf"{missing} not installed") as err:
        export_gguf(tiny_dir, tmp_path / "x.gguf", dtype=dtype)
    assert "sc2tune[serve]" in (err.value.hint or "")
    assert no_output(tmp_path)
