"""Prepared data on disk: the content key, atomic builds, one build under concurrency, the same rows as the
in-memory path (the independent reference: today's builder, ``data.cache_dir: null``), any worker count."""

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


@pytest.mark.parametrize("data", [
    {},  # repository-less folder, eval fraction
    {"fim": {"repo_context": True}, "eval": None},
    {"packing": False, "fim": {"rate": 0.9}},
])
def test_same_rows_and_statistics_as_the_in_memory_path(tmp_path, tokenizer, data):
    recipe = _recipe(tmp_path, **data)
    memory = build_datasets(recipe.model_copy(update={"data": recipe.data.model_copy(update={"cache_dir": None})}),
                            tokenizer, show_progress=False)
    disk = build_datasets(recipe, tokenizer, show_progress=False)
    assert disk.prepared is not None and memory.prepared is None
    assert disk.stats.to_dict() == memory.stats.to_dict()
    assert disk.stats.skipped == {"binary": 1}
    assert _rows(disk.train) == _rows(memory.train)
    assert _rows(disk.eval) == _rows(memory.eval)
    hit = build_datasets(recipe, tokenizer, show_progress=False)
    assert hit.prepared == disk.prepared and _rows(hit.train) == _rows(memory.train)


def test_instruct_and_classify_take_the_same_road(tmp_path, tokenizer):
    (tmp_path / "i.jsonl").write_text("".join(
        json.dumps({"instruction": f"Say {i}.", "output": f"{i} " * (i % 7 + 1)}) + "\n" for i in range(20)))
    (tmp_path / "c.jsonl").write_text("".join(
        json.dumps({"text": f"text {i} " * (i % 5 + 1), "label": ["a", "b"][i % 2]}) + "\n" for i in range(20)))
    cases = [("instruct", {"train": str(tmp_path / "i.jsonl")}, {}),
             ("classify", {"train": str(tmp_path / "c.jsonl"), "packing": False},
              {"head": "sequence-classification"})]
    for task, data, model in cases:
        spec = {"eval": 0.25, "max_length": 64, "packing": True, "cache_dir": str(tmp_path / "cache"), **data}
        recipe = recipe_from_dict({"task": task, "data": spec, "model": model})
        off = recipe_from_dict({"task": task, "data": {**spec, "cache_dir": None}, "model": model})
        disk, memory = (build_datasets(r, tokenizer, show_progress=False) for r in (recipe, off))
        assert disk.prepared is not None
        assert disk.stats.to_dict() == memory.stats.to_dict()
        assert disk.id2label == memory.id2label
        assert _rows(disk.train) == _rows(memory.train) and _rows(disk.eval) == _rows(memory.eval)
        assert type(disk.collator) is type(memory.collator)


def test_rows_do_not_depend_on_the_number_of_workers(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setattr(chunked, "CHUNK_BYTES", 1500)  # several chunks on a small corpus
    one = build_datasets(_recipe(tmp_path, eval=None), tokenizer, show_progress=False)
    two = build_datasets(_recipe(tmp_path, eval=None, num_proc=2, cache_dir=str(tmp_path / "cache2")),
                         tokenizer, show_progress=False)
    assert len(json.loads(Path(one.prepared, "meta.json").read_text())["parts"]["train"]) > 3
    assert one.prepared != two.prepared and Path(one.prepared).name == Path(two.prepared).name  # same key
    assert _rows(one.train) == _rows(two.train)
    assert one.stats.to_dict() == two.stats.to_dict()
    # chunking keeps every document and window of the in-memory path (only FIM draws are seeded per chunk)
    memory = build_datasets(_recipe(tmp_path, eval=None, cache_dir=None), tokenizer, show_progress=False)
    assert (one.stats.examples, one.stats.windows) == (memory.stats.examples, memory.stats.windows)
    assert one.stats.rows < 1.1 * memory.stats.rows


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
    assert any(name.startswith(".") and ".staging-" in name for name in leftovers)

    disk = build_datasets(recipe, tokenizer, show_progress=False)
    memory = build_datasets(_recipe(tmp_path, eval=None, cache_dir=None), tokenizer, show_progress=False)
    assert _rows(disk.train) == _rows(memory.train)
    assert not [p for p in (tmp_path / "cache").iterdir() if ".staging-" in p.name]  # the leftover is gone
    assert not [p for p in (tmp_path / "cache" / "chunks").iterdir() if ".staging-" in p.name]


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


def test_unreadable_entries_are_skipped_like_the_in_memory_path(tmp_path, tokenizer):
    recipe = _recipe(tmp_path, eval=None)
    (tmp_path / "code" / "dangling.py").symlink_to(tmp_path / "nowhere.py")
    os.mkfifo(tmp_path / "code" / "pipe.py")  # reading it would block forever
    disk = build_datasets(recipe, tokenizer, show_progress=False)
    assert disk.stats.skipped == {"binary": 1, "symlink_outside": 1, "fifo": 1}  # the link leads out of code/
    memory = build_datasets(_recipe(tmp_path, eval=None, cache_dir=None), tokenizer, show_progress=False)
    assert memory.stats.skipped == disk.stats.skipped
    assert _rows(disk.train) == _rows(memory.train)
