"""The light cache lookup (sc2tune.data.lookup): the same key as the full path, no torch/transformers/datasets
imported, and ``sc2tune data --prepare`` answering a hit with the statistics the full path printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sc2tune.data import build_datasets
from sc2tune.data.lookup import lookup_prepared
from sc2tune.data.store import cache_root
from sc2tune.recipe import recipe_from_dict

ROOT = Path(__file__).resolve().parents[2]


def _recipe(tmp_path: Path, task: str = "classify", **data):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": f"text {i} " * (i % 5 + 1), "label": ["b", "a"][i % 2]}) + "\n"
                            for i in range(20)))
    spec = {"train": str(path), "eval": 0.25, "max_length": 32, "packing": False,
            "cache_dir": str(tmp_path / "cache"), **data}
    model = {"head": "sequence-classification"} if task == "classify" else {}
    return recipe_from_dict({"task": task, "data": spec, "model": model})


def test_lookup_finds_what_the_full_path_prepared(tmp_path, tokenizer):
    recipe = _recipe(tmp_path)
    assert lookup_prepared(recipe) is None  # nothing prepared yet
    bundle = build_datasets(recipe, tokenizer, show_progress=False)
    found = lookup_prepared(recipe)
    assert found is not None and str(found.folder) == bundle.prepared  # the same key
    assert found.stats.to_dict() == bundle.stats.to_dict() and found.id2label == bundle.id2label == {0: "a", 1: "b"}
    assert lookup_prepared(recipe.model_copy(update={"data": recipe.data.model_copy(update={"max_length": 33})})) is None
    assert lookup_prepared(recipe.model_copy(update={"data": recipe.data.model_copy(update={"cache_dir": None})})) is None


def test_a_tokenizer_that_padded_a_batch_still_finds_its_prepared_data(tmp_path):
    """transformers leaves a padded call's padding/truncation settings on the tokenizer: they do not count."""
    from sc2tune.modeling import ModelSource, load_tokenizer

    tokenizer = load_tokenizer(ModelSource())
    recipe = _recipe(tmp_path)
    first = build_datasets(recipe, tokenizer, show_progress=False)
    tokenizer(["a = 1", "def f(x):\n    return x"], padding=True, truncation=True, max_length=8)
    settings = (tokenizer.backend_tokenizer.padding, tokenizer.backend_tokenizer.truncation)
    assert build_datasets(recipe, tokenizer, show_progress=False).prepared == first.prepared
    found = lookup_prepared(recipe)
    assert found is not None and str(found.folder) == first.prepared
    assert (tokenizer.backend_tokenizer.padding, tokenizer.backend_tokenizer.truncation) == settings  # left as found


def test_lookup_imports_no_torch_transformers_or_datasets(tmp_path, tokenizer):
    recipe = _recipe(tmp_path)
    bundle = build_datasets(recipe, tokenizer, show_progress=False)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe.model_dump(mode="json")))
    code = ("import json, sys\n"
            "from sc2tune.data.lookup import lookup_prepared\n"
            "from sc2tune.recipe import load_recipe\n"
            f"found = lookup_prepared(load_recipe({str(path)!r}, []))\n"
            "from sc2tune.cli import main\n"  # the whole command, printing the statistics table included
            f"code = main(['data', {str(path)!r}, '--prepare'])\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
            "print(json.dumps([str(found.folder), code, heavy]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == [bundle.prepared, 0, []]


def test_auto_cache_folder_is_the_models_cache_folder(monkeypatch, tmp_path):
    from sc2tune.tiny import cache_dir

    monkeypatch.setenv("SC2TUNE_CACHE", str(tmp_path))
    assert cache_root("auto") == cache_dir() / "data" == tmp_path / "data"


@pytest.mark.parametrize("as_json", [True, False])
def test_prepare_hit_prints_what_the_full_path_printed_without_a_tokenizer(tmp_path, run_cli, monkeypatch, as_json):
    recipe = _recipe(tmp_path, task="instruct", train=str(tmp_path / "i.jsonl"), packing=True,
                     max_length=96)
    (tmp_path / "i.jsonl").write_text("".join(json.dumps({"instruction": f"Say {i}.", "output": f"{i} " * i}) + "\n"
                                              for i in range(1, 20)))
    path = tmp_path / "r.json"
    path.write_text(json.dumps(recipe.model_dump(mode="json")))
    args = ["data", str(path), "--prepare", *(["--json"] if as_json else [])]
    miss = run_cli(*args)
    assert miss.returncode == 0, miss.stderr
    import sc2tune.modeling

    def no_tokenizer(*_a, **_k):
        raise AssertionError("a cache hit loaded the tokenizer")

    monkeypatch.setattr(sc2tune.modeling, "load_tokenizer", no_tokenizer)
    hit = run_cli(*args)
    assert hit.returncode == 0, hit.stderr
    assert hit.stdout == miss.stdout and "prepared data: " in (hit.stderr if as_json else hit.stdout)
    if as_json:
        assert json.loads(hit.stdout.splitlines()[-1])["examples"] == 19 - round(19 * 0.25)  # data.eval holds out 5
