"""The prepared-data cache trusts nothing it did not write: owner and mode checks, checksums, a run's
data.json, a lock that gives up naming its holder, and a key that sees versions, outside code, hub
revisions, restored-mtime edits; an edit to one file rebuilds only its chunk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sc2tune.data import build_datasets, cache_key, chunked
from sc2tune.data.cache_key import data_key, key_inputs
from sc2tune.data.store import build_once
from sc2tune.errors import DataError
from sc2tune.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _code(tmp_path: Path, n: int = 24) -> Path:
    code = tmp_path / "code"
    if not code.exists():
        code.mkdir()
        for i in range(n):
            body = "".join(f"    y{k} = x * {k} + {i}  # line {k}\n" for k in range(3 + i % 11))
            (code / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    '''Function {i}.'''\n{body}    return x\n")
    return code


def _recipe(tmp_path: Path, cache: str = "cache", **data):
    spec = {"train": str(_code(tmp_path)), "eval": None, "max_length": 96, "packing": True,
            "cache_dir": str(tmp_path / cache), **data}
    return recipe_from_dict({"task": "fim", "data": spec, "train": {"seed": 5}})


def _key(recipe) -> str:
    return data_key(key_inputs(recipe))


def _meta(bundle) -> dict:
    return json.loads((Path(bundle.prepared) / "meta.json").read_text())


# ---- who may have written it ------------------------------------------------------------------------

def test_a_cache_folder_writable_by_everyone_is_refused_unless_sticky(tmp_path):
    root = tmp_path / "shared"
    root.mkdir()
    os.chmod(root, 0o777)
    with pytest.raises(DataError, match=r"writable by every user \(mode 777\) without the sticky bit") as err:
        build_once(root, "k", lambda staging: {})
    assert str(root) in str(err.value) and not (root / "k").exists()  # nothing written
    os.chmod(root, 0o1777)  # like /tmp: nobody can rename or delete what another user put there
    folder, hit = build_once(root, "k", lambda staging: {})
    assert folder == root / "k" and not hit
    inner = tmp_path / "open" / "cache"  # a folder under an open one can be swapped: refused too
    inner.mkdir(parents=True)
    os.chmod(tmp_path / "open", 0o777)
    with pytest.raises(DataError, match="lies under"):
        build_once(inner, "k", lambda staging: {})


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_cache_folder_or_entry_owned_by_another_user_is_refused(tmp_path, tokenizer):
    root = tmp_path / "theirs"
    root.mkdir()
    os.chown(root, NOBODY, NOBODY)
    with pytest.raises(DataError, match=f"owned by uid {NOBODY}, not by this user"):
        build_once(root, "k", lambda staging: {})
    recipe = _recipe(tmp_path)
    first = build_datasets(recipe, tokenizer, show_progress=False)
    os.chown(Path(first.prepared) / "meta.json", NOBODY, NOBODY)  # an entry someone else could rewrite
    with pytest.raises(DataError, match=f"meta.json: prepared data is owned by uid {NOBODY}"):
        build_datasets(recipe, tokenizer, show_progress=False)


# ---- what is in it ------------------------------------------------------------------------------------

def test_tampered_rows_or_meta_are_refused_and_a_run_refuses_other_rows(tmp_path, tokenizer):
    recipe = _recipe(tmp_path)
    first = build_datasets(recipe, tokenizer, show_progress=False)
    meta_path = Path(first.prepared) / "meta.json"
    part = Path(first.prepared).parent / _meta(first)["parts"]["train"][0]
    data = bytearray(part.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0x01  # a same-size edit of the rows
    part.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"rows.arrow: prepared data that differs from what was written"):
        build_datasets(recipe, tokenizer, show_progress=False)
    data[middle] ^= 0x01
    part.write_bytes(bytes(data))
    assert build_datasets(recipe, tokenizer, show_progress=False).checksum == first.checksum

    meta = json.loads(meta_path.read_text())
    meta["packing"] = False  # would change how the collator reads the rows
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="meta.json was changed after it was written"):
        build_datasets(recipe, tokenizer, show_progress=False)
    meta["packing"] = True
    meta_path.write_text(json.dumps(meta))

    # a run's data.json names the folder and its checksum: another checksum is refused, the right one read
    with pytest.raises(DataError, match="not the prepared data this run started with"):
        build_datasets(recipe, tokenizer, show_progress=False, prepared=first.prepared, prepared_checksum="0" * 64)
    again = build_datasets(recipe, tokenizer, show_progress=False, prepared=first.prepared,
                           prepared_checksum=first.checksum)
    assert again.train.to_dict() == first.train.to_dict()


def test_the_run_records_and_reads_back_the_checksum(tmp_path):
    from sc2tune.runs import RunFolder
    from sc2tune.training.run import _pinned_data

    folder = tmp_path / "cache" / "k"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    RunFolder(tmp_path).data_record.write_text(json.dumps({"prepared": str(folder), "checksum": "abc"}))
    assert _pinned_data(tmp_path) == (str(folder), "abc")


HOLDER = """
import sys, time
from pathlib import Path
from sc2tune.data.store import build_once
def build(staging):
    print("holding", flush=True)
    time.sleep(60)
    return {}
build_once(Path(sys.argv[1]), "k", build)
"""


def test_the_lock_gives_up_after_its_timeout_naming_the_holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "holding"
        start = time.monotonic()
        with pytest.raises(DataError, match=rf"waited 0.5 s for process {proc.pid} on host ") as err:
            build_once(tmp_path, "k", lambda staging: {}, timeout=0.5)
        assert time.monotonic() - start < 30
        assert "k.lock" in str(err.value) and not (tmp_path / "k").exists()
    finally:
        proc.kill()
        proc.wait()


# ---- what the key sees --------------------------------------------------------------------------------

def test_key_sees_library_versions(tmp_path, monkeypatch):
    import importlib.metadata

    recipe = _recipe(tmp_path)
    key = _key(recipe)
    real = importlib.metadata.version
    for name in ("tokenizers", "transformers"):
        monkeypatch.setattr(importlib.metadata, "version", lambda n, name=name: "0.0.1" if n == name else real(n))
        assert _key(recipe) != key, name
    monkeypatch.setattr(importlib.metadata, "version", real)
    assert _key(recipe) == key


def test_key_sees_row_shaping_code_outside_the_data_package(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "tokens.py").write_text("PAD_TOKEN = '<fim_pad>'\n")
    monkeypatch.setattr(cache_key, "_PACKAGE", package)
    base = cache_key._code_hash()
    (package / "tokens.py").write_text("PAD_TOKEN = '<|endoftext|>'\n")  # another pad rule: other rows
    assert cache_key._code_hash() != base
    (package / "tokens.py").write_text("PAD_TOKEN = '<fim_pad>'\n")
    assert cache_key._code_hash() == base


def test_key_sees_the_hub_datasets_resolved_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    recipe = recipe_from_dict({"task": "fim", "data": {"train": "hub:owner/name", "cache_dir": str(tmp_path)}})
    assert key_inputs(recipe)["train_files"] == [["hub", "owner/name", None, "main@unresolved"]]
    refs = tmp_path / "hub" / "datasets--owner--name" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    first = _key(recipe)
    (refs / "main").write_text("b" * 40)  # the dataset was updated on the hub and fetched again
    assert _key(recipe) != first
    pinned = recipe_from_dict({"task": "fim", "data": {"train": "hub:owner/name:test@" + "c" * 40,
                                                       "cache_dir": str(tmp_path)}})
    assert key_inputs(pinned)["train_files"] == [["hub", "owner/name", "test", "c" * 40]]
    (refs / "v1").write_text("d" * 40)
    tagged = recipe_from_dict({"task": "fim", "data": {"train": "hub:owner/name@v1", "cache_dir": str(tmp_path)}})
    assert key_inputs(tagged)["train_files"] == [["hub", "owner/name", None, "d" * 40]]


def test_a_same_size_edit_with_its_mtime_restored_is_seen(tmp_path):
    stat_recipe, content_recipe = _recipe(tmp_path), _recipe(tmp_path, cache_check="content")
    keys = _key(stat_recipe), _key(content_recipe)
    path = tmp_path / "code" / "m03.py"
    before = path.stat()
    text = path.read_text()
    path.write_text(text.replace("x * 1", "x * 2"))  # same size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert _key(content_recipe) != keys[1]  # the bytes differ
    assert _key(stat_recipe) != keys[0]  # the ctime moved (no user can set it back)
    assert data_key(key_inputs(content_recipe)) == _key(content_recipe)


# ---- an edit rebuilds only its chunk ------------------------------------------------------------------

def test_an_edit_to_one_file_rebuilds_only_its_chunk_with_the_rows_of_a_fresh_build(tmp_path, tokenizer,
                                                                                      monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 1500)  # several chunks on a small corpus
    recipe = _recipe(tmp_path)
    first = build_datasets(recipe, tokenizer, show_progress=False)
    n = len(_meta(first)["parts"]["train"])
    assert n > 3 and _meta(first)["chunks"] == {"built": n, "reused": 0}
    path = tmp_path / "code" / "m05.py"
    path.write_text(path.read_text().replace("line 1\n", "line 9\n"))  # same size
    second = build_datasets(recipe, tokenizer, show_progress=False)
    assert second.prepared != first.prepared
    assert _meta(second)["chunks"] == {"built": 1, "reused": n - 1}
    changed = [a != b for a, b in zip(_meta(first)["parts"]["train"], _meta(second)["parts"]["train"],
                                      strict=True)]
    assert sum(changed) == 1
    fresh = build_datasets(_recipe(tmp_path, cache="clean"), tokenizer, show_progress=False)
    assert _meta(fresh)["chunks"] == {"built": n, "reused": 0}
    assert second.train.data.table.equals(fresh.train.data.table)
    assert second.train.to_dict() == fresh.train.to_dict() and second.stats.to_dict() == fresh.stats.to_dict()
    assert second.train.to_dict() != first.train.to_dict()


def test_a_hub_revision_in_the_recipe_reaches_the_loader(monkeypatch):
    import datasets

    from sc2tune.data.sources import iter_records

    seen = {}

    def fake(path, split=None, revision=None):
        seen.update(path=path, split=split, revision=revision)
        return datasets.Dataset.from_dict({"text": ["x = 1\n"]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    parts = list(iter_records("hub:owner/name:test@v1", "data.train", required=["text"], text_fields=["text"]))
    assert seen == {"path": "owner/name", "split": "test", "revision": "v1"}
    assert [part.columns["text"] for part in parts] == [["x = 1\n"]]


def test_a_part_without_a_checksum_or_outside_the_cache_is_refused(tmp_path):
    from sc2tune.data.store import verified_meta

    (tmp_path / "evil.arrow").write_bytes(b"rows")
    for parts in (["../evil.arrow"], ["k/train/unlisted.arrow"]):
        root = tmp_path / f"cache{len(parts[0])}"
        folder, _ = build_once(root, "k", lambda staging, parts=parts: {"parts": {"train": parts}, "files": {}})
        with pytest.raises(DataError, match="naming a part it has no checksum for, or outside the cache folder"):
            verified_meta(root, folder, full=False)


def test_without_posix_owners_the_trust_check_passes_instead_of_crashing(tmp_path, monkeypatch):
    # Windows has no os.geteuid (and st_uid is always 0): a cache folder there must not raise AttributeError.
    from sc2tune.data import integrity

    (tmp_path / "cache").mkdir()
    monkeypatch.delattr(os, "geteuid")
    assert integrity.untrusted(tmp_path / "cache") is None
    integrity.check_cache_folder(tmp_path / "cache")


def test_leftover_probe_never_signals_a_process_outside_posix(monkeypatch):
    # On Windows os.kill(pid, 0) terminates pid: the leftover probe (the one of sc2tune.atomic that the data
    # cache, merge outputs and every staged write use) must not call it there.
    from sc2tune import atomic

    def kill(pid, sig):
        raise AssertionError(f"os.kill({pid}, {sig}) called")

    monkeypatch.setattr(os, "kill", kill)
    with monkeypatch.context() as m:  # os.name back before pytest reports (its paths depend on it)
        m.setattr(os, "name", "nt")
        try:
            alive: object = atomic.alive(4242)
        except AssertionError as err:
            alive = err
    assert alive is True, alive


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_two_users_of_one_shared_sticky_cache_each_get_their_own_entries(tmp_path, tokenizer, monkeypatch):
    # docs/data.md's shared cache (chmod 1777, each user trusting only what they own): another user's build of
    # the same recipe must not make ours fail on their entries (it was refused: 'owned by uid 65534').
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    recipe = _recipe(tmp_path, cache="shared")
    with monkeypatch.context() as m:  # user 65534 builds first (files chowned to it below)
        m.setattr(os, "geteuid", lambda: NOBODY)
        theirs = build_datasets(recipe, tokenizer, show_progress=False)
    for dirpath, dirnames, filenames in os.walk(shared):
        for name in [*dirnames, *filenames]:
            os.chown(Path(dirpath) / name, NOBODY, NOBODY)
    ours = build_datasets(recipe, tokenizer, show_progress=False)  # as root: builds its own copy
    assert Path(ours.prepared).stat().st_uid == 0 and ours.prepared != theirs.prepared
    assert ours.train["input_ids"] == theirs.train["input_ids"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chgrp to another group needs root")
def test_a_group_shared_cache_with_umask_002_is_usable(tmp_path, tokenizer):
    # A project folder shared by a group (setgid + sticky, group-writable) and a user with umask 002: the
    # folder sc2tune creates for this user in it inherits the group; it must not come out group-writable
    # (its own trust check then refused it: 'writable by group 65534').
    shared = tmp_path / "team"
    shared.mkdir()
    os.chown(shared, 0, NOBODY)
    os.chmod(shared, 0o3775)
    old = os.umask(0o002)
    try:
        bundle = build_datasets(_recipe(tmp_path, cache="team"), tokenizer, show_progress=False)
    finally:
        os.umask(old)
    assert Path(bundle.prepared).parent.parent == shared and len(bundle.train) > 0
