"""The output folder (``sc2tune.merging.output``): what ``--overwrite`` may replace, atomic publishing, and
the leftovers of killed merges: through ``merge`` and the CLI, and function by function against the rules
of the module's docstring on a real filesystem."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.merging import describe_merge, merge, stream
from sc2tune.merging.output import (
    MARKER,
    OWNER,
    check_out_dir,
    clean_stale,
    is_model_output,
    publish,
    staging_dir,
)

from .merge_helpers import make_adapter


def test_existing_output_needs_overwrite_and_failures_leave_nothing(tied_base: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    adapter = make_adapter(tied_base, tmp_path / "adapter")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "config.json").write_text("{}")  # a previous model output: config.json + weights
    (out / "model.safetensors").write_bytes(b"old")
    (out / "keep.txt").write_text("old")
    with pytest.raises(UserError, match="already exists"):
        merge(adapter, out, base=str(tied_base), verify=False, progress=False)
    with pytest.raises(UserError, match="overlaps"):
        merge(adapter, adapter, base=str(tied_base), verify=False, overwrite=True, progress=False)

    calls = {"n": 0}
    real = stream.merge_tensor

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(stream, "merge_tensor", failing)
    with pytest.raises(UserError, match="disk filled up"):
        merge(adapter, out, base=str(tied_base), verify=False, overwrite=True, progress=False)
    assert (out / "keep.txt").read_text() == "old"  # the old output is untouched
    with pytest.raises(UserError, match="disk filled up"):
        calls["n"] = 0
        merge(adapter, tmp_path / "fresh", base=str(tied_base), verify=False, progress=False)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]  # no temporary folder left

    monkeypatch.setattr(stream, "merge_tensor", real)
    merge(adapter, out, base=str(tied_base), verify=False, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()


def test_overwrite_refuses_a_folder_that_is_not_a_model_output(base: Path, adapter: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture):
    out = tmp_path / "home"
    (out / "src").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "config.json").write_text("{}")  # config.json alone is not a model output
    with pytest.raises(UserError, match="not a model folder"):
        merge(adapter, out, base=str(base), verify=False, overwrite=True, progress=False)
    assert main(["merge", str(adapter), "--out", str(out), "--base", str(base), "--overwrite", "--no-verify"]) == 1
    err = capsys.readouterr().err
    assert "not a model folder" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "src").is_dir()

    merge(adapter, tmp_path / "merged", base=str(base), verify=False, progress=False)
    merge(adapter, tmp_path / "merged", base=str(base), verify=False, overwrite=True, progress=False)  # ours: ok


def test_a_killed_merge_leaves_a_folder_the_next_merge_removes(base: Path, adapter: Path, tmp_path: Path):
    out = tmp_path / "merged"
    script = textwrap.dedent(f"""
        import os, signal
        from sc2tune.merging import stream
        from sc2tune.merging import merge
        real, n = stream.merge_tensor, [0]
        def dying(*args, **kwargs):
            n[0] += 1
            if n[0] == 12:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        stream.merge_tensor = dying
        merge({str(adapter)!r}, {str(out)!r}, base={str(base)!r}, verify=False, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".merged.tmp-*"))
    assert len(left) == 1 and (left[0] / OWNER).is_file() and not out.exists()
    live = tmp_path / ".other.tmp-live"  # a merge still running (this process): not ours to remove
    live.mkdir()
    (live / OWNER).write_text(f"{os.getpid()}@{os.uname().nodename}")
    foreign = tmp_path / ".cache.tmp-x"  # matches the pattern but has no owner file: not ours
    foreign.mkdir()

    result = merge(adapter, out, base=str(base), verify=False, progress=False)
    assert not left[0].exists() and live.is_dir() and foreign.is_dir()
    assert any("interrupted merge" in n and str(left[0]) in n for n in result.notes)
    assert "interrupted merge" in describe_merge(result)


def test_an_output_a_killed_merge_set_aside_is_back_before_out_is_checked(base: Path, adapter: Path,
                                                                          tmp_path: Path):
    """A merge with --overwrite killed between its renames left the previous output as .merged.old-*: the next
    merge, without --overwrite, must see it as merged again and refuse, not replace it."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    aside = tmp_path / ".merged.old-abc123"
    aside.mkdir()
    (aside / MARKER).write_text("{}")
    (aside / "model.safetensors").write_bytes(b"previous")
    (aside / OWNER).write_text(f"{dead.pid}@{socket.gethostname()}")
    with pytest.raises(UserError, match="already exists"):
        merge(adapter, tmp_path / "merged", base=str(base), verify=False, progress=False)
    assert (tmp_path / "merged" / "model.safetensors").read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]


def test_a_model_output_is_the_marker_or_config_with_weights(tmp_path: Path):
    folder = tmp_path / "out"
    folder.mkdir()
    assert not is_model_output(folder)
    (folder / "config.json").write_text("{}")
    assert not is_model_output(folder)  # a config alone may be anybody's
    (folder / "model.safetensors.index.json").write_text("{}")
    assert is_model_output(folder)
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / "sc2tune_merge.json").write_text("{}")
    assert is_model_output(marked)


def test_check_out_dir_refusals(tmp_path: Path):
    inputs = [tmp_path / "adapter", tmp_path / "base"]
    for path in inputs:
        path.mkdir()
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    refusals = {tmp_path / "a-file": "exists and is a file", tmp_path / "adapter" / "merged": "overlaps",
                tmp_path: "overlaps", tmp_path / "base": "overlaps", tmp_path / "full": "already exists"}
    for out, message in refusals.items():
        with pytest.raises(UserError, match=message):
            check_out_dir(out, overwrite=False, inputs=inputs)
    for fine in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        check_out_dir(fine, overwrite=False, inputs=inputs)  # no error


def test_clean_stale_removes_only_folders_of_dead_merges_on_this_host(tmp_path: Path):
    dead = subprocess.Popen(["true"])  # a process that has exited (and was reaped): its pid runs nothing now
    dead.wait()
    host = socket.gethostname()
    owners = {".merged.tmp-dead": f"{dead.pid}@{host}", ".merged.tmp-elsewhere": f"{dead.pid}@another-{host}",
              ".merged.tmp-live": f"{os.getpid()}@{host}", ".merged.tmp-garbled": "not a pid",
              "merged.tmp-visible": f"{dead.pid}@{host}"}  # not a hidden .NAME.tmp-* folder
    for name, owner in owners.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / OWNER).write_text(owner)
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / ".merged.tmp-unowned").mkdir()
    removed = clean_stale(tmp_path)
    assert len(removed) == 1 and str(tmp_path / ".merged.tmp-dead") in removed[0] and f"pid {dead.pid}" in removed[0]
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == {*owners, ".merged.tmp-unowned"} - {".merged.tmp-dead"}
    assert clean_stale(tmp_path / "nowhere") == []


def test_staging_is_removed_on_failure_and_published_with_one_rename(tmp_path: Path):
    out = tmp_path / "merged"
    with pytest.raises(RuntimeError), staging_dir(out) as tmp:
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("merge failed")
    assert list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "old.txt").write_text("old")
    (out / MARKER).write_text("{}")  # a previous merge's output: --overwrite may replace it
    with staging_dir(out) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".merged.tmp-") and (tmp / OWNER).is_file()
        umask = os.umask(0)
        os.umask(umask)
        assert tmp.stat().st_mode & 0o777 == 0o777 & ~umask  # the usual mode, not mkdtemp's private one
        (tmp / "model.safetensors").write_bytes(b"new")
        publish(tmp, out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary or old folder left
    assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]  # the owner file is not published


_KILLED_PUBLISH = """
import os, sys
from pathlib import Path
from sc2tune.merging import output

out, at = Path(sys.argv[1]), sys.argv[2]
calls = {"rename": 0, "unlink": 0}
real_rename, real_unlink = os.replace, Path.unlink  # every rename is sc2tune.atomic.move's os.replace
KILL = {"between-renames": ("rename", 2),   # the old output set aside, the new one not yet in its place
        "owner-in-output": ("unlink", 1),   # the new one published, its owner file not yet removed
        "mid-delete": ("unlink", 3)}[at]    # the old output being deleted, one of its files gone

def counted(kind, real):
    def call(self, *args, **kwargs):
        calls[kind] += 1
        if (kind, calls[kind]) == KILL:
            os._exit(9)
        return real(self, *args, **kwargs)
    return call

with output.staging_dir(out) as tmp:  # the merge: its staging folder and owner file are this process's
    (tmp / "model.safetensors").write_bytes(b"new")
    (tmp / output.MARKER).write_bytes(b"{}")
    os.replace, Path.unlink = counted("rename", real_rename), counted("unlink", real_unlink)
    output.publish(tmp, out, overwrite=True)
"""


@pytest.mark.parametrize("at", ["between-renames", "owner-in-output", "mid-delete"])
def test_a_merge_killed_while_replacing_an_output_loses_neither(tmp_path: Path, at: str):
    """A kill at any point of publish: the next clean_stale leaves exactly one complete NAME (the previous
    output if the new one had not taken its place yet, else the new one), no owner file in it, nothing hidden."""
    out = tmp_path / "merged"
    out.mkdir()
    previous = {"model.safetensors": b"previous", MARKER: b"{}", "config.json": b"{}"}
    for name, data in previous.items():
        (out / name).write_bytes(data)
    child = subprocess.run([sys.executable, "-c", _KILLED_PUBLISH, str(out), at], check=False)
    assert child.returncode == 9
    assert out.exists() == (at != "between-renames")  # the state a kill leaves, before any repair
    notes = clean_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]
    if at == "between-renames":
        assert {p.name: p.read_bytes() for p in out.iterdir()} == previous
        assert any("restored" in note for note in notes)
    else:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == {"model.safetensors": b"new", MARKER: b"{}"}
        assert any("removed" in note for note in notes)


def test_what_appeared_at_out_during_the_merge_is_kept_and_so_is_the_merge(tmp_path: Path):
    """check_out_dir passed, then a folder appeared at --out: publish replaces it only under the same rules
    (--overwrite and a model output); else both stay and the error names where the merge went."""
    out = tmp_path / "merged"
    cases = {"notes": (True, {"notes.txt": b"mine"}), "previous": (False, {MARKER: b"{}"})}
    for label, (overwrite, files) in cases.items():
        with staging_dir(out) as tmp:
            (tmp / "model.safetensors").write_bytes(b"new")
            out.mkdir()
            for name, data in files.items():
                (out / name).write_bytes(data)
            with pytest.raises(UserError, match="was not replaced: it appeared while the merge ran") as err:
                publish(tmp, out, overwrite=overwrite)
        kept = [p for p in tmp_path.iterdir() if p.name.startswith("merged.merged-")]
        assert len(kept) == 1 and str(kept[0]) in (err.value.hint or ""), label
        assert {p.name: p.read_bytes() for p in kept[0].iterdir()} == {"model.safetensors": b"new"}, label
        assert {p.name: p.read_bytes() for p in out.iterdir()} == files, label
        shutil.rmtree(out)
        shutil.rmtree(kept[0])


def test_clean_stale_reads_the_name_exactly(tmp_path: Path):
    """An output named like a leftover (``model.old-v1``): its staging folder is not taken for a set-aside
    ``model`` and published as one."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    staging = tmp_path / ".model.old-v1.tmp-zz9abc"
    staging.mkdir()
    (staging / OWNER).write_text(f"{dead.pid}@{socket.gethostname()}")
    (staging / "model-00001-of-00003.safetensors").write_bytes(b"part")
    notes = clean_stale(tmp_path)
    assert list(tmp_path.iterdir()) == [] and len(notes) == 1 and "removed" in notes[0]


def test_clean_stale_leaves_the_set_aside_output_of_a_live_merge(tmp_path: Path):
    old = tmp_path / ".merged.old-live"
    old.mkdir()
    (old / OWNER).write_text(f"{os.getpid()}@{socket.gethostname()}")
    assert clean_stale(tmp_path) == []
    assert old.is_dir() and not (tmp_path / "merged").exists()
