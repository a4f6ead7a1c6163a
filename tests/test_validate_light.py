"""validate and plan stay light: no torch, and the same answers as the transformers path.

* ``validate`` and ``plan`` of shipped recipes run in a fresh interpreter without importing torch,
  transformers or peft (``sys.modules`` after the command).
* The tokenizer check read from the files (:class:`sc2tune.tokenizer_files.TokenizerFiles`) against
  transformers' ``AutoTokenizer`` on the same folder: vocabulary, size, eos/unk/pad, and the check's note
  or error for folders with and without ``<fim_pad>``, the FIM tokens, a pad token of their own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from sc2tune.errors import UserError
from sc2tune.modeling import ModelSource, check_tokenizer, load_tokenizer
from sc2tune.recipe import ModelSpec
from sc2tune.tiny import TOKENIZER_DIR
from sc2tune.tokenizer_files import TokenizerFiles
from sc2tune.tokens import special_tokens

REPO = Path(__file__).resolve().parents[1]

_PROBE = """
import sys
from sc2tune.cli import main
codes = [main(["validate", r]) for r in sys.argv[1:]] + [main(["plan", r, "--gpu-memory", "24GB"]) for r in sys.argv[1:]]
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules)
print("RESULT", codes, heavy)
"""


def test_validate_and_plan_import_no_torch() -> None:
    recipes = [str(REPO / r) for r in ("recipes/quickstart/fim.yaml", "recipes/quickstart/classify.yaml",
                                       "recipes/starcoder2-15b/alpaca-qlora.yaml", "recipes/starcoderbase-7b/fim-qlora.yaml")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _PROBE, *recipes], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=300)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    assert line == f"RESULT {[0] * 8} []", out.stderr[-2000:]


def _reference(folder: Path, task: str) -> str:
    """The check through transformers (what check_tokenizer did before reading files directly)."""
    tokenizer = load_tokenizer(ModelSource(str(folder)))
    special_tokens(tokenizer, need_fim=task == "fim")
    return f"tokenizer ok ({len(tokenizer)} tokens, pad {tokenizer.pad_token})"


def _outcome(fn, *args) -> str:
    try:
        return fn(*args)
    except UserError as err:
        return f"error: {err} | {err.hint}"


def _variant(tmp_path: Path, drop: tuple[str, ...] = (), config: dict | None = None) -> Path:
    folder = tmp_path / "tok"
    shutil.copytree(TOKENIZER_DIR, folder)
    (folder / "special_tokens_map.json").unlink()
    data = json.loads((folder / "tokenizer.json").read_text())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] not in drop]
    for token in drop:
        data["model"]["vocab"].pop(token, None)
    (folder / "tokenizer.json").write_text(json.dumps(data))
    base = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps({**base, **(config or {})}))
    return folder


VARIANTS = {
    "bundled": {},
    "no-fim-prefix": {"drop": ("<fim_prefix>",)},
    "no-fim-pad": {"drop": ("<fim_pad>",)},
    "own-pad": {"config": {"pad_token": "<issue_start>"}},
    "pad-is-eos": {"config": {"pad_token": "<|endoftext|>"}},
    "no-unk": {"config": {"unk_token": None}, "drop": ("<fim_suffix>",)},
}


@pytest.mark.parametrize("key", sorted(VARIANTS))
def test_files_answer_as_transformers(key: str, tmp_path: Path) -> None:
    folder = TOKENIZER_DIR if key == "bundled" else _variant(tmp_path, **VARIANTS[key])
    files = TokenizerFiles.open(folder)
    assert files is not None
    reference = AutoTokenizer.from_pretrained(str(folder))
    assert files.get_vocab() == reference.get_vocab() and len(files) == len(reference)
    for attr in ("eos_token_id", "unk_token_id", "pad_token", "pad_token_id"):
        assert getattr(files, attr) == getattr(reference, attr), attr
    for task in ("fim", "instruct"):
        assert _outcome(check_tokenizer, ModelSpec(name_or_path=str(folder)), task) == _outcome(_reference, folder, task)


def test_built_in_model_note_is_unchanged() -> None:
    spec = ModelSpec(name_or_path="sc2tune/tiny-starcoder2")
    assert check_tokenizer(spec, "fim") == _reference(Path(load_tokenizer(ModelSource.of(spec)).name_or_path), "fim")


def test_folders_only_transformers_can_read_fall_back(tmp_path: Path) -> None:
    remote = _variant(tmp_path, config={"auto_map": {"AutoTokenizer": ["x.Tok", None]}})
    assert TokenizerFiles.open(remote) is None
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
    assert TokenizerFiles.open(unknown) is None
    missing = _variant(tmp_path / "m", config={"pad_token": "<not-in-vocab>"})
    assert TokenizerFiles.open(missing) is None


@pytest.mark.parametrize("model", ["sc2tune/tiny-starcoder2", "bigcode/starcoderbase-7b"])
@pytest.mark.parametrize("targets", ["auto", "all-linear", ["c_proj"], ["gate_proj", "q_proj"], ["mlp"]])
def test_target_check_answers_as_the_meta_model(model: str, targets, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same note or error from the analytic layout as from transformers' meta model (the reference)."""
    import sc2tune.configs as configs
    from sc2tune.adapters import check_target_modules
    from sc2tune.recipe import recipe_from_dict

    recipe = recipe_from_dict({"model": {"name_or_path": model}, "task": "instruct",
                               "adapter": {"method": "lora", "target_modules": targets},
                               "data": {"train": "data_templates/samples/instruct.jsonl"}}, source="<test>")
    analytic = _outcome(check_target_modules, recipe)
    monkeypatch.setattr(configs, "_analytic_cached", lambda *a: None)
    assert analytic == _outcome(check_target_modules, recipe)
