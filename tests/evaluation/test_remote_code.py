"""A downloaded run folder cannot make sc2tune run its model's code: only the command line can."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sc2tune.cli import main


def hostile_run(tmp_path: Path) -> tuple[Path, Path]:
    """A run folder whose recipe names a model with code that writes ``marker`` when imported."""
    marker = tmp_path / "code-ran"
    model = tmp_path / "evil-model"
    model.mkdir()
    (model / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n"
        "    model_type = 'evil'\n")
    (model / "config.json").write_text(json.dumps({
        "model_type": "evil", "auto_map": {"AutoConfig": "configuration_evil.EvilConfig"}}))
    code = tmp_path / "code"
    code.mkdir()
    (code / "a.py").write_text("def f():\n    return 1\n" * 20)
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    recipe = {"model": {"name_or_path": str(model), "trust_remote_code": True}, "task": "fim",
              "data": {"train": str(code), "eval": 0.5}, "output_dir": str(run)}
    (run / "adapter" / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(model)}))
    return run, marker


@pytest.mark.parametrize("command", [["eval", "{run}"], ["eval", "{run}/adapter"], ["data", "{run}/adapter/recipe.yaml"],
                                     ["generate", "{run}", "--prompt", "x"], ["classify", "{run}", "--text", "x"]])
def test_a_run_folder_cannot_turn_remote_code_on(tmp_path: Path, capsys: pytest.CaptureFixture, command: list[str]):
    run, marker = hostile_run(tmp_path)
    assert main([part.format(run=run) for part in command]) == 2
    err = capsys.readouterr().err
    assert "trust_remote_code" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert not marker.exists()


def test_generate_runs_the_models_code_only_with_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture):
    run, marker = hostile_run(tmp_path)
    config = run / "adapter" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "peft_type": "LORA", "r": 8, "lora_alpha": 16,
                                  "target_modules": ["q_proj"]}))
    assert main(["generate", str(run), "--prompt", "x"]) == 2 and not marker.exists()
    main(["generate", str(run), "--prompt", "x", "--trust-remote-code"])  # the model itself is not loadable
    assert marker.exists()  # the command line said so: the recipe was accepted and the model's code ran


# ---- sc2tune merge: a base whose config.json names its own code (auto_map) -------------------------------

CONFIG_CODE = """open({marker!r}, "a").write("configuration ran\\n")
from transformers import Starcoder2Config


class EvilConfig(Starcoder2Config):
    model_type = "evil_starcoder2"
"""
MODEL_CODE = """open({marker!r}, "a").write("modeling ran\\n")
from transformers import Starcoder2ForCausalLM

from .configuration_evil import EvilConfig


class EvilForCausalLM(Starcoder2ForCausalLM):
    config_class = EvilConfig
"""


def save_lora_adapter(model, base: Path, adapter: Path) -> None:
    """A PEFT LoRA adapter for ``model`` (saved in ``base``) with random factors, saved in ``adapter``."""
    import torch
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "c_fc"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(adapter)
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**adapter_config, "base_model_name_or_path": str(base)}))


def remote_code_adapter(tmp_path: Path, *, recipe: bool, tokenizer: bool = False) -> tuple[Path, Path, Path]:
    """(adapter folder, base folder, marker): a small float32 StarCoder2 whose config.json maps AutoConfig and
    AutoModelForCausalLM to Python files in the folder that write ``marker`` when imported, and a PEFT LoRA
    adapter for it (random factors), with a saved recipe saying ``model.trust_remote_code: true`` if ``recipe``.
    ``tokenizer``: the base has StarCoder2's vocabulary and the bundled tokenizer beside it (so it generates)."""
    import torch
    from transformers import Starcoder2ForCausalLM

    from sc2tune.tiny import load_bundled_tokenizer, tiny_config

    marker = tmp_path / "code-ran"
    base = tmp_path / "evil-base"
    config = tiny_config()
    config.hidden_size, config.intermediate_size = 64, 128
    if not tokenizer:
        config.vocab_size = 256
    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(config)
    model.save_pretrained(base)
    if tokenizer:
        load_bundled_tokenizer().save_pretrained(base)
    (base / "configuration_evil.py").write_text(CONFIG_CODE.format(marker=str(marker)))
    (base / "modeling_evil.py").write_text(MODEL_CODE.format(marker=str(marker)))
    saved = json.loads((base / "config.json").read_text())
    saved.update(model_type="evil_starcoder2", architectures=["EvilForCausalLM"],
                 auto_map={"AutoConfig": "configuration_evil.EvilConfig",
                           "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"})
    (base / "config.json").write_text(json.dumps(saved))

    adapter = tmp_path / "run" / "adapter"
    save_lora_adapter(model, base, adapter)
    if recipe:
        code = tmp_path / "code"
        code.mkdir()
        for name in ("a.py", "b.py"):  # two documents: one to train on, one held out
            (code / name).write_text("def f():\n    return 1\n" * 20)
        (adapter / "recipe.yaml").write_text(yaml.safe_dump({
            "model": {"name_or_path": str(base), "trust_remote_code": True}, "task": "fim",
            "data": {"train": str(code), "eval": 0.5}, "output_dir": str(adapter.parent)}))
    return adapter, base, marker


@pytest.mark.parametrize("recipe, status", [(True, 2), (False, 1)], ids=["recipe-says-trust", "plain-peft-adapter"])
def test_merge_without_the_flag_refuses_a_base_with_its_own_code(tmp_path: Path, run_cli, recipe: bool, status: int):
    """Refused by the saved recipe (a RecipeError, status 2) or, without one, by the base's config.json (1)."""
    adapter, _, marker = remote_code_adapter(tmp_path, recipe=recipe)
    out = tmp_path / "merged"
    result = run_cli("merge", str(adapter), "--out", str(out))
    assert result.returncode == status, result.stderr
    assert "--trust-remote-code" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists() and not out.exists()


def test_merge_runs_the_models_code_only_with_the_flag(tmp_path: Path, run_cli):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, Starcoder2ForCausalLM

    adapter, base, marker = remote_code_adapter(tmp_path, recipe=True)
    out = tmp_path / "merged"
    result = run_cli("merge", str(adapter), "--out", str(out), "--trust-remote-code", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout
    assert set(marker.read_text().splitlines()) == {"configuration ran", "modeling ran"}
    # the merged folder carries the base's code and loads through it, as the base does
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModelForCausalLM"] == \
        "modeling_evil.EvilForCausalLM"
    assert type(AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)).__name__ == "EvilForCausalLM"
    # and holds PEFT's own merge of the adapter (the base read as the plain StarCoder2 it subclasses)
    plain = Starcoder2ForCausalLM.from_pretrained(base, dtype=torch.float32)
    expected = PeftModel.from_pretrained(plain, adapter).merge_and_unload().state_dict()
    merged = load_file(out / "model.safetensors")
    assert set(merged) == set(expected) - {"lm_head.weight"}  # tied: stored once, as the embeddings
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6, msg=name)


# ---- a hub base, a merged folder, a bare model folder: the model's code runs only with the flag ----------


def fake_hub(monkeypatch: pytest.MonkeyPatch, repos: dict[str, Path], snapshots: Path) -> list[list[str]]:
    """``snapshot_download`` of ``repos`` (hub id -> folder) offline: each call copies the files its
    ``allow_patterns`` match into a fresh snapshot folder, as the hub client does; returns the patterns asked."""
    import fnmatch
    import shutil

    import huggingface_hub

    import sc2tune.hub

    asked: list[list[str]] = []

    def snapshot_download(repo_id: str, *, revision: str | None = None, allow_patterns: list[str]) -> str:
        asked.append(list(allow_patterns))
        out = snapshots / f"snapshot{len(asked)}"
        out.mkdir(parents=True)
        for file in repos[repo_id].iterdir():
            if any(fnmatch.fnmatch(file.name, pattern) for pattern in allow_patterns):
                shutil.copyfile(file, out / file.name)
        return str(out)

    monkeypatch.setattr(sc2tune.hub, "ensure_hub_reachable", lambda *args, **kwargs: None)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return asked


def test_resolve_base_fetches_a_hub_models_code_only_when_trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from sc2tune.runs import resolve_base

    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "modeling_evil.py"):
        (repo / name).write_text("{}")
    asked = fake_hub(monkeypatch, {"org/evil": repo}, tmp_path / "snapshots")
    plain = resolve_base("org/evil")
    trusted = resolve_base("org/evil", trust_remote_code=True)
    assert "*.py" not in asked[0] and set(asked[1]) - set(asked[0]) == {"*.py"}
    assert sorted(p.name for p in plain.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (trusted / "modeling_evil.py").is_file()


@pytest.mark.parametrize("command", ["generate", "merge"])
def test_a_hub_base_with_its_own_code_loads_from_its_id_only_with_the_flag(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli, command: str):
    """generate ID and merge --base ID: the snapshot holds the model's Python files only with the flag."""
    adapter, base, marker = remote_code_adapter(tmp_path, recipe=False, tokenizer=True)
    asked = fake_hub(monkeypatch, {"org/evil-base": base}, tmp_path / "snapshots")
    args = {"generate": ["generate", "org/evil-base", "--prompt", "def f():", "--max-new-tokens", "4"],
            "merge": ["merge", str(adapter), "--base", "org/evil-base", "--out", str(tmp_path / "out"),
                      "--no-progress"]}[command]
    refused = run_cli(*args)
    assert refused.returncode == 1, refused.stderr
    assert "--trust-remote-code" in refused.stderr and "Traceback" not in refused.stderr
    assert not marker.exists() and "*.py" not in asked[-1]
    result = run_cli(*args, "--trust-remote-code")
    assert result.returncode == 0, result.stderr
    assert "*.py" in asked[-1] and "modeling ran" in marker.read_text().splitlines()


@pytest.mark.parametrize("kind", ["bare", "merged"])
def test_generate_loads_a_model_folder_with_its_own_code_only_with_the_flag(tmp_path: Path, run_cli, kind: str):
    """A bare model folder with auto_map (no recipe.yaml: only the command line can say yes) and a merged folder
    of such a base (it carries the base's code): refused naming the flag, loaded and generating with it."""
    adapter, base, marker = remote_code_adapter(tmp_path, recipe=False, tokenizer=True)
    folder = base
    if kind == "merged":
        folder = tmp_path / "merged"
        made = run_cli("merge", str(adapter), "--out", str(folder), "--trust-remote-code", "--no-progress")
        assert made.returncode == 0, made.stderr
        assert (folder / "modeling_evil.py").is_file()
        marker.unlink()  # the merge ran the base's code: what follows starts clean
    args = ["generate", str(folder), "--prompt", "def f():", "--max-new-tokens", "4"]
    refused = run_cli(*args)
    assert refused.returncode == 1, refused.stderr
    assert "--trust-remote-code" in refused.stderr and "auto_map" in refused.stderr
    assert "Traceback" not in refused.stderr and not marker.exists()
    result = run_cli(*args, "--trust-remote-code")
    assert result.returncode == 0, result.stderr
    assert set(marker.read_text().splitlines()) == {"configuration ran", "modeling ran"}


def test_eval_scores_a_merged_model_with_its_own_code_with_the_flag(tmp_path: Path, run_cli):
    """eval RUN --models merged: the run's recipe says model.trust_remote_code, --trust-remote-code confirms it,
    and the merged folder (which carries the base's code) loads with it."""
    adapter, _, marker = remote_code_adapter(tmp_path, recipe=True, tokenizer=True)
    run = adapter.parent
    made = run_cli("merge", str(adapter), "--out", str(run / "merged"), "--trust-remote-code", "--no-progress")
    assert made.returncode == 0, made.stderr
    marker.unlink()
    args = ["eval", str(run), "--models", "merged", "--infill-examples", "0", "--json"]
    refused = run_cli(*args)
    assert refused.returncode == 2 and "--trust-remote-code" in refused.stderr and not marker.exists()
    result = run_cli(*args, "--trust-remote-code")
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout.splitlines()[-1])["models"]
    assert list(scores) == ["merged"] and scores["merged"]["tokens"] > 0 and scores["merged"]["loss"] > 0
    assert "modeling ran" in marker.read_text().splitlines()


# ---- sc2tune merge: a tokenizer that names its own code (tokenizer_config.json's auto_map) ----------------

TOKENIZER_CODE = """open({marker!r}, "a").write("tokenizer ran\\n")
from transformers import PreTrainedTokenizerFast


class OwnTokenizer(PreTrainedTokenizerFast):
    pass
"""


def own_code_tokenizer_adapter(tmp_path: Path, *, where: str) -> tuple[Path, Path]:
    """(adapter folder, marker): a PEFT LoRA adapter for a small plain StarCoder2 (no code of its own), the
    tokenizer merge takes (the adapter's, else the base's: ``where``) naming its own code in
    tokenizer_config.json's auto_map, code that writes ``marker`` when imported."""
    import shutil

    import torch
    from transformers import Starcoder2ForCausalLM

    from sc2tune.tiny import TOKENIZER_DIR, tiny_config

    marker = tmp_path / "code-ran"
    base = tmp_path / "plain-base"
    config = tiny_config()
    config.hidden_size, config.intermediate_size = 64, 128
    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(config)
    model.save_pretrained(base)
    adapter = tmp_path / "run" / "adapter"
    save_lora_adapter(model, base, adapter)
    tok = adapter if where == "adapter" else base
    shutil.copytree(TOKENIZER_DIR, tok, dirs_exist_ok=True)
    tok_config = json.loads((tok / "tokenizer_config.json").read_text())
    tok_config.update(auto_map={"AutoTokenizer": [None, "own_tokenizer.OwnTokenizer"]}, tokenizer_class="OwnTokenizer")
    (tok / "tokenizer_config.json").write_text(json.dumps(tok_config))
    (tok / "own_tokenizer.py").write_text(TOKENIZER_CODE.format(marker=str(marker)))
    return adapter, marker


@pytest.mark.parametrize("where", ["adapter", "base"])
def test_merge_refuses_a_tokenizer_with_its_own_code_before_streaming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli, where: str):
    """Without the flag: refused naming --trust-remote-code before any weight is streamed (it used to fail with
    a traceback in write_metadata, after the whole merge); nothing written, the code never ran."""
    import sc2tune.merging.stream  # merge imports stream_merge from it when it runs

    adapter, marker = own_code_tokenizer_adapter(tmp_path, where=where)
    streamed: list[bool] = []
    real = sc2tune.merging.stream.stream_merge
    monkeypatch.setattr(sc2tune.merging.stream, "stream_merge", lambda *a, **k: streamed.append(True) or real(*a, **k))
    out = tmp_path / "merged"
    result = run_cli("merge", str(adapter), "--out", str(out), "--no-progress")
    assert result.returncode == 1, result.stderr
    assert "--trust-remote-code" in result.stderr and "tokenizer_config.json" in result.stderr
    assert "Traceback" not in result.stderr
    assert not streamed and not out.exists() and not marker.exists()
    assert not list(tmp_path.glob(".merged.tmp-*"))


@pytest.mark.parametrize("where", ["adapter", "base"])
def test_merge_with_the_flag_carries_the_tokenizers_code(tmp_path: Path, run_cli, where: str):
    """With the flag the merge succeeds and the merged folder holds the tokenizer's code and names it, so its
    tokenizer loads through that code (trust_remote_code=True), as its source did."""
    from transformers import AutoTokenizer

    adapter, marker = own_code_tokenizer_adapter(tmp_path, where=where)
    out = tmp_path / "merged"
    result = run_cli("merge", str(adapter), "--out", str(out), "--trust-remote-code", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout and "tokenizer ran" in marker.read_text()
    assert (out / "own_tokenizer.py").read_text() == (adapter if where == "adapter" else adapter.parent.parent /
                                                      "plain-base").joinpath("own_tokenizer.py").read_text()
    assert "AutoTokenizer" in json.loads((out / "tokenizer_config.json").read_text())["auto_map"]
    marker.unlink()  # the merge ran the code: what follows imports it afresh, from the merged folder
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)
    assert type(tokenizer).__name__ == "OwnTokenizer" and marker.exists()
    assert tokenizer("def f():")["input_ids"]


# ---- a built-in model_type with an auto_map: transformers' own class, the folder's code unused, said so -----


def builtin_type_with_own_code(tmp_path: Path, *, auto_map: bool = True) -> tuple[Path, Path]:
    """(folder, marker): a small plain StarCoder2 (model_type ``starcoder2``, which transformers has built in)
    whose config.json's auto_map names code in the folder that writes ``marker`` when imported."""
    import torch
    from transformers import Starcoder2ForCausalLM

    from sc2tune.tiny import tiny_config

    marker = tmp_path / "code-ran"
    folder = tmp_path / "builtin-with-code"
    config = tiny_config()
    config.hidden_size, config.intermediate_size, config.vocab_size = 64, 128, 256
    torch.manual_seed(0)
    Starcoder2ForCausalLM(config).save_pretrained(folder)
    (folder / "configuration_evil.py").write_text(CONFIG_CODE.format(marker=str(marker)))
    (folder / "modeling_evil.py").write_text(MODEL_CODE.format(marker=str(marker)))
    if auto_map:
        saved = json.loads((folder / "config.json").read_text())
        saved["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig",
                             "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
        (folder / "config.json").write_text(json.dumps(saved))
    return folder, marker


def unused_code_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelname == "WARNING" and "auto_map" in r.getMessage() and "--trust-remote-code" in r.getMessage()]


@pytest.mark.parametrize("auto_map", [True, False], ids=["auto-map", "plain"])
def test_load_model_warns_once_that_a_builtin_types_own_code_was_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, auto_map: bool):
    """starcoder2 with an auto_map, loaded without the flag: transformers' Starcoder2ForCausalLM (the folder's code
    never ran), and one warning saying the code in auto_map was not used; a folder without auto_map: none."""
    from sc2tune.modeling import ModelSource, load_model

    folder, marker = builtin_type_with_own_code(tmp_path, auto_map=auto_map)
    with caplog.at_level("WARNING"):
        model = load_model(ModelSource(str(folder), dtype="float32", attn=None), device="cpu")
    assert type(model).__name__ == "Starcoder2ForCausalLM" and not marker.exists()
    warnings = unused_code_warnings(caplog)
    if auto_map:
        assert len(warnings) == 1 and str(folder) in warnings[0] and "not used" in warnings[0], warnings
    else:
        assert warnings == []


def test_open_checkpoint_warns_once_that_a_builtin_types_own_code_was_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """The merge's base read without the flag: transformers' Starcoder2Config, the code unrun, one warning."""
    from sc2tune.merging.checkpoint import open_checkpoint
    from sc2tune.modeling import ModelSource

    folder, marker = builtin_type_with_own_code(tmp_path)
    with caplog.at_level("WARNING"):
        ckpt = open_checkpoint(ModelSource(str(folder)))
    assert type(ckpt.config).__name__ == "Starcoder2Config" and not marker.exists()
    warnings = unused_code_warnings(caplog)
    assert len(warnings) == 1 and str(folder) in warnings[0] and "not used" in warnings[0], warnings
    caplog.clear()
    open_checkpoint(ModelSource(str(folder)))
    assert len(unused_code_warnings(caplog)) == 1  # once per load, not once per process


# ---- sc2tune export: a saved recipe that says trust_remote_code ------------------------------------------


@pytest.mark.parametrize("fmt", ["gguf", "gguf-lora"])
def test_export_of_a_run_whose_recipe_trusts_its_code_needs_the_flag_and_then_works(tmp_path: Path, run_cli,
                                                                                     fmt: str):
    """The flag given on the command line reaches every reader of the run (the adapter's included)."""
    adapter, base, marker = remote_code_adapter(tmp_path, recipe=True, tokenizer=True)
    config = json.loads((base / "config.json").read_text())  # the base itself: plain StarCoder2
    config.update(model_type="starcoder2", architectures=["Starcoder2ForCausalLM"])
    del config["auto_map"]
    (base / "config.json").write_text(json.dumps(config))
    out = tmp_path / "run.gguf"
    refused = run_cli("export", str(adapter.parent), "--format", fmt, "--out", str(out))
    assert refused.returncode == 2 and "--trust-remote-code" in refused.stderr and not out.exists()
    done = run_cli("export", str(adapter.parent), "--format", fmt, "--out", str(out), "--trust-remote-code")
    assert done.returncode == 0, done.stderr
    import gguf

    assert gguf.GGUFReader(out).get_field("general.architecture").contents() == "starcoder2"
    assert not marker.exists()  # nothing in the base folder names its code any more
