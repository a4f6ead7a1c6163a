"""Prepared data on disk: the content key, atomic builds, one build under concurrency, the same rows with
``data.cache_dir: null`` (a temporary folder, gone when the process ends) and with any worker count. The
rows themselves are checked against plain tokenizer calls in test_rows.py."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sc2tune.cli import main
from sc2tune.data import build_datasets, chunked
from sc2tune.data.prepare import prepared_key
from sc2tune.data.store import build_once
from sc2tune.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]


def _code(tmp_path: Path, n: int = 30) -> Path:
    code = tmp_path / "code"
    if code.exists():  # written once: rewriting would (rightly) give a new key
        return code
    code.mkdir()
    for i in range(n):
        body = "".join(f"    y{k} = x * {k} + {i}  # line {k}\n" for k in range(3 + i % 17))
        (code / f"m{i:02d}.py").write_text(f"def f{i}(x):\n    '''Function {i}.'''\n{body}    return x\n")
    (code / "blob.py").write_bytes(b"\x00\x01binary")  # skipped: binary
    return code


def _recipe(tmp_path: Path, task: str = "fim", **data):
    spec = {"train": str(_code(tmp_path)), "eval": 0.2, "max_length": 96, "packing": True,
            "cache_dir": str(tmp_path / "cache"), **data}
    return recipe_from_dict({"task": task, "data": spec, "train": {"seed": 5}})


def _rows(ds) -> dict | None:
    return None if ds is None else ds.to_dict()


def _prepared(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".") and p.is_dir()
            and p.name != "chunks"]


def _key(recipe, tokenizer) -> str:
    return prepared_key(recipe, tokenizer)


def test_key_changes_with_files_tokenizer_and_data_keys_only(tmp_path, tokenizer, monkeypatch):
    recipe = _recipe(tmp_path)
    key = _key(recipe, tokenizer)
    assert _key(recipe, tokenizer) == key
    same = recipe.model_copy(update={"data": recipe.data.model_copy(update={"num_proc": 2, "cache_dir": "/x"}),
                                     "train": recipe.train.model_copy(update={"lr": 1.0, "max_steps": 3})})
    assert _key(same, tokenizer) == key  # workers, cache place and optimiser settings do not change rows
    monkeypatch.chdir(tmp_path)
    relative = recipe.model_copy(update={"data": recipe.data.model_copy(update={"train": "code"})})
    assert _key(relative, tokenizer) == key  # `train` makes paths absolute: still the same key

    for change in ({"max_length": 128}, {"packing": False}, {"eval": 0.3}, {"exclude": ["m01.py"]}):
        other = recipe.model_copy(update={"data": recipe.data.model_copy(update=change)})
        assert _key(other, tokenizer) != key, change
    assert _key(recipe.model_copy(update={"train": recipe.train.model_copy(update={"seed": 6})}), tokenizer) != key

    grown = copy.deepcopy(tokenizer)
    grown.add_tokens(["<my_new_token>"])
    assert _key(recipe, grown) != key  # another tokenizer object than the recipe's files load

    folder = tmp_path / "tok"  # the recipe's tokenizer as files: a changed file changes the key
    tokenizer.save_pretrained(folder)
    local = recipe.model_copy(update={"model": recipe.model.model_copy(update={"name_or_path": str(folder)})})
    local_key = _key(local, tokenizer)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_max_length": 77}))
    assert _key(local, tokenizer) != local_key

    source = tmp_path / "code" / "m03.py"
    text = source.read_text()
    source.write_text(text.replace("x * 1", "x * 2"))
    assert _key(recipe, tokenizer) != key
    (tmp_path / "code" / "new.py").write_text("x = 1\n")
    assert _key(recipe, tokenizer) != key


def _records(tmp_path: Path) -> dict[str, dict]:
    (tmp_path / "i.jsonl").write_text("".join(
        json.dumps({"instruction": f"Say {i}.", "output": f"{i} " * (i % 7 + 1)}) + "\n" for i in range(20)))
    (tmp_path / "c.jsonl").write_text("".join(
        json.dumps({"text": f"text {i} " * (i % 5 + 1), "label": ["a", "b"][i % 2]}) + "\n" for i in range(20)))
    return {"instruct": {"train": str(tmp_path / "i.jsonl")},
            "classify": {"train": str(tmp_path / "c.jsonl"), "packing": False}}


@pytest.mark.parametrize("task", ["fim", "instruct", "classify"])
def test_without_a_cache_the_same_rows_come_from_a_temporary_folder(tmp_path, tokenizer, task, caplog):
    import logging

    data = {"fim": {}, **_records(tmp_path)}[task]
    model = {"head": "sequence-classification"} if task == "classify" else {}
    recipe = recipe_from_dict({"task": task, "model": model, "train": {"seed": 5}, "data": {
        "train": str(_code(tmp_path)), "eval": 0.2, "max_length": 96, "packing": True,
        "cache_dir": str(tmp_path / "cache"), **data}})
    disk = build_datasets(recipe, tokenizer, show_progress=False)
    off = recipe.model_copy(update={"data": recipe.data.model_copy(update={"cache_dir": None})})
    with caplog.at_level(logging.INFO, logger="sc2tune.data"):
        temporary = build_datasets(off, tokenizer, show_progress=False)
    assert disk.prepared is not None and temporary.prepared is None and temporary.checksum is None
    assert str(tmp_path / "cache") not in caplog.text  # nothing read from (or written to) the cache folder
    assert temporary.stats.to_dict() == disk.stats.to_dict() and temporary.id2label == disk.id2label
    assert _rows(temporary.train) == _rows(disk.train) and _rows(temporary.eval) == _rows(disk.eval)
    assert type(temporary.collator) is type(disk.collator)
    if task == "fim":
        assert disk.stats.skipped == {"binary": 1}
    hit = build_datasets(recipe, tokenizer, show_progress=False)
    assert hit.prepared == disk.prepared and _rows(hit.train) == _rows(disk.train)


def test_rows_do_not_depend_on_the_number_of_workers(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 1500)  # several chunks on a small corpus
    one = build_datasets(_recipe(tmp_path, eval=None), tokenizer, show_progress=False)
    two = build_datasets(_recipe(tmp_path, eval=None, num_proc=2, cache_dir=str(tmp_path / "cache2")),
                         tokenizer, show_progress=False)
    assert len(json.loads(Path(one.prepared, "meta.json").read_text())["parts"]["train"]) > 3
    assert one.prepared != two.prepared and Path(one.prepared).name == Path(two.prepared).name  # same key
    assert _rows(one.train) == _rows(two.train)
    assert one.stats.to_dict() == two.stats.to_dict()
    assert one.stats.examples == 30  # every file but the binary one


KILLER = """
import os, signal, sys
from sc2tune.cli import main
from sc2tune.data import chunked
chunked.CHUNK_BYTES = 1500
written = []
real = chunked.put_chunk
def write_then_die(*args):
    out = real(*args)
    written.append(1)
    if len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
chunked.put_chunk = write_then_die
sys.exit(main(["data", sys.argv[1], "--prepare"]))
"""


@pytest.mark.slow  # a whole process, killed: ~6 s idle, 20 s on a busy machine
def test_a_killed_prepare_leaves_nothing_a_later_run_uses(tmp_path, tokenizer):
    recipe = _recipe(tmp_path, eval=None)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe.model_dump(mode="json")))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(path)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert proc.returncode == -9, proc.stderr
    leftovers = [p.name for p in (tmp_path / "cache").iterdir()]
    assert _prepared(tmp_path) == []  # only the staging folder (and the lock file)
    assert any(name.startswith(".") and ".tmp-" in name for name in leftovers)

    disk = build_datasets(recipe, tokenizer, show_progress=False)
    clean = build_datasets(_recipe(tmp_path, eval=None, cache_dir=str(tmp_path / "clean")), tokenizer,
                           show_progress=False)
    assert _rows(disk.train) == _rows(clean.train)  # the killed build's chunks are whole, or not there
    assert not [p for p in (tmp_path / "cache").iterdir() if ".tmp-" in p.name]  # the leftover is gone
    assert not [p for p in (tmp_path / "cache" / "chunks").iterdir() if ".tmp-" in p.name]


def test_concurrent_builders_of_one_key_build_once(tmp_path):
    calls = []

    def build(staging: Path) -> dict:
        calls.append(1)
        time.sleep(0.5)
        (staging / "train").mkdir()
        return {"built": True}

    results = []
    threads = [threading.Thread(target=lambda: results.append(build_once(tmp_path, "k", build))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True, True]
    assert {folder for folder, _ in results} == {tmp_path / "k"}


def test_a_folder_without_meta_is_never_read(tmp_path):
    (tmp_path / "k" / "train").mkdir(parents=True)  # e.g. copied by hand, half way
    folder, hit = build_once(tmp_path, "k", lambda staging: {"fresh": True})
    assert not hit and json.loads((folder / "meta.json").read_text())["fresh"] is True


@pytest.mark.parametrize("damage", [b"\xff\xfe not utf-8", b"{not json", b"[1, 2]"])
def test_a_damaged_meta_is_a_clear_error_naming_it(tmp_path, tokenizer, damage):
    from sc2tune.errors import UserError

    recipe = _recipe(tmp_path, eval=None)
    build_datasets(recipe, tokenizer, show_progress=False)
    meta = _prepared(tmp_path)[0] / "meta.json"
    meta.write_bytes(damage)
    with pytest.raises(UserError) as caught:
        build_datasets(recipe, tokenizer, show_progress=False)
    assert str(meta) in str(caught.value) and "unreadable prepared data" in str(caught.value)


def test_resume_reads_the_prepared_data_it_started_with(tmp_path, tokenizer, caplog):
    import logging

    recipe = _recipe(tmp_path, eval=None)
    first = build_datasets(recipe, tokenizer, show_progress=False)
    with caplog.at_level(logging.INFO, logger="sc2tune.data"):
        build_datasets(recipe, tokenizer, show_progress=False, prepared=first.prepared)
    assert "changed since this run started" not in caplog.text
    (tmp_path / "code" / "m00.py").write_text("def changed():\n    return 1\n")  # the key moves on
    with caplog.at_level(logging.INFO, logger="sc2tune.data"):
        again = build_datasets(recipe, tokenizer, show_progress=False, prepared=first.prepared)
    assert again.prepared == first.prepared and _rows(again.train) == _rows(first.train)
    assert len(_prepared(tmp_path)) == 1  # nothing rebuilt
    assert "changed since this run started" in caplog.text  # but the user is told


def test_prepare_command(tmp_path, capsys):
    recipe = _recipe(tmp_path, eval=None)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe.model_dump(mode="json")))
    assert main(["data", str(path), "--prepare"]) == 0
    out = capsys.readouterr().out
    assert f"prepared data: {_prepared(tmp_path)[0]}" in out
    assert main(["data", str(path), "--prepare", "data.cache_dir=null"]) == 1  # a UserError
    assert "data.cache_dir" in capsys.readouterr().err


@pytest.mark.slow  # trains the tiny model twice (~15 s)
def test_train_resume_uses_the_prepared_data_of_the_run(tmp_path, caplog):
    import logging

    from sc2tune.training import train

    base = _recipe(tmp_path, eval=None, max_length=64)
    recipe = base.model_copy(update={
        "train": base.train.model_copy(update={"max_steps": 2, "save_steps": 1, "batch_size": 2}),
        "output_dir": str(tmp_path / "run")})
    train(recipe, show_progress=False)
    folder = json.loads((tmp_path / "run" / "data.json").read_text())["prepared"]
    assert Path(folder).parent == tmp_path / "cache"
    (tmp_path / "code" / "m00.py").write_text("def changed():\n    return 1\n")  # would give a new key
    longer = recipe.model_copy(update={"train": recipe.train.model_copy(update={"max_steps": 3})})
    with caplog.at_level(logging.INFO, logger="sc2tune.data"):
        result = train(longer, resume=True, show_progress=False)
    assert result.global_step == 3
    assert f"prepared data of the run in {folder} (not rebuilt)" in caplog.text
    assert "cache miss" not in caplog.text and len(_prepared(tmp_path)) == 1


def test_unreadable_entries_are_skipped(tmp_path, tokenizer):
    recipe = _recipe(tmp_path, eval=None)
    (tmp_path / "code" / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    os.mkfifo(tmp_path / "code" / "pipe.py")  # reading it would block forever
    disk = build_datasets(recipe, tokenizer, show_progress=False)
    assert disk.stats.skipped == {"binary": 1, "symlink_outside": 1, "fifo": 1}  # the link leads out of code/
    assert disk.stats.examples == 30


_TEMPORARY = """
import sys
from sc2tune.data.store import temporary_root
root = temporary_root()
(root / "rows.arrow").write_bytes(b"x")
print(root, flush=True)
if sys.argv[1] == "kill":
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_temporary_folder_is_gone_when_its_process_ends(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    run = lambda how: subprocess.run([sys.executable, "-c", _TEMPORARY, how], capture_output=True, text=True,  # noqa: E731
                                     env=env, timeout=120)
    ended = run("exit")
    assert ended.returncode == 0, ended.stderr
    folder = Path(ended.stdout.strip())
    assert folder.parent == tmp_path and folder.name.startswith("sc2tune-data-") and not folder.exists()
    killed = run("kill")
    left = Path(killed.stdout.strip())
    assert killed.returncode == -9 and (left / "rows.arrow").is_file()  # atexit never ran
    again = run("exit")  # the next one made removes what a dead process of this host left
    assert again.returncode == 0 and not left.exists()


def test_each_process_has_its_own_temporary_folder(tmp_path, monkeypatch):
    import socket
    import tempfile

    from sc2tune.data.store import temporary_root

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    parent = tmp_path / f"sc2tune-data-{socket.gethostname()}-{os.getppid()}-abcdefgh"  # a live process's
    parent.mkdir()
    first, second = temporary_root(), temporary_root()
    assert first != second and first.is_dir() and second.is_dir() and parent.is_dir()
    assert oct(first.stat().st_mode & 0o777) == "0o700"
