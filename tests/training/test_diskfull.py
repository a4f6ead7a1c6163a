"""A full disk while saving: a clear error, no half-written checkpoint or adapter, earlier checkpoints intact."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from sc2tune.cli import main

pytestmark = pytest.mark.slow

RECIPE = Path(__file__).parents[2] / "recipes" / "quickstart" / "alpaca.yaml"


def fail_writes_under(monkeypatch: pytest.MonkeyPatch, marker: str, error: BaseException) -> None:
    """Make ``torch.save`` fail (as a full disk makes it fail) for files whose path contains ``marker``."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if marker in str(f):
            Path(str(f)).write_bytes(b"partial")  # what a write cut short leaves
            raise error
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def run(out: Path, *extra: str) -> int:
    return main(["train", str(RECIPE), f"output_dir={out}", "data.eval=null", "train.max_steps=2",
                 "train.save_steps=1", "--no-progress", *extra])


def test_disk_full_during_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture):
    # torch.save reports a failed write as a RuntimeError whose text names it; the OSError is not kept
    fail_writes_under(monkeypatch, "checkpoint-2",
                      RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                                   "writing file data/0: file write failed"))
    out = tmp_path / "run"
    assert run(out) == 1
    err = capsys.readouterr().err
    assert "disk filled up while saving checkpoint checkpoint-2" in err and "--resume" in err
    assert "Traceback" not in err
    checkpoints = out / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-1"]  # no staging, no half checkpoint
    assert (checkpoints / "checkpoint-1" / "adapter_model.safetensors").is_file()


def test_disk_full_while_saving_the_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture):
    fail_writes_under(monkeypatch, ".adapter.staging", OSError(errno.ENOSPC, "No space left on device"))
    out = tmp_path / "run"
    assert run(out, "train.save_steps=2") == 1
    err = capsys.readouterr().err
    assert "disk filled up while saving the trained adapter" in err
    assert not (out / "adapter").exists() and not (out / ".adapter.staging").exists()
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
