"""Generation at the edges of the model's context: empty prompts, prompts too long, capped lengths."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_generation import constant_model

from sc2tune.cli import main
from sc2tune.errors import UserError
from sc2tune.generation import Sampling, generate, load_for_inference
from sc2tune.tiny import load_bundled_tokenizer

CONTEXT = 48


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny StarCoder2 that reads at most 48 positions and greedily emits 'x' at every step."""
    return constant_model(tmp_path_factory.mktemp("short"), "x", max_positions=CONTEXT)


def test_an_empty_prompt_is_a_clear_error(short_context_model: Path, capsys: pytest.CaptureFixture):
    assert main(["generate", str(short_context_model), "--prompt", ""]) == 1
    err = capsys.readouterr().err
    assert "prompt is empty" in err and "Traceback" not in err


def test_a_prompt_longer_than_the_context_is_refused(short_context_model: Path):
    tokenizer = load_bundled_tokenizer()
    prompt = " a" * (CONTEXT + 5)
    assert len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > CONTEXT
    with pytest.raises(UserError, match=f"reads at most {CONTEXT}"):
        generate(load_for_inference(short_context_model), prompt, Sampling(max_new_tokens=4, temperature=0))


def test_max_new_tokens_is_capped_by_the_context(short_context_model: Path, caplog: pytest.LogCaptureFixture):
    tokenizer = load_bundled_tokenizer()
    prompt = " a" * (CONTEXT - 3)
    n = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert n == CONTEXT - 3
    out = generate(load_for_inference(short_context_model), prompt, Sampling(max_new_tokens=100, temperature=0))
    assert out == "x" * 3  # exactly the three positions left, not 100
    assert "capped to 3" in caplog.text


def test_cli_repository_infill_builds_the_training_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture):
    import sc2tune.generation as gen

    seen: dict = {}
    monkeypatch.setattr(gen, "_decode", lambda lm, ids, sampling, stops: seen.update(ids=ids) or ["MID"])
    monkeypatch.chdir(tmp_path)
    Path("util.py").write_text("X = 1\n")
    Path("a.py").write_text("import util\n<cursor>\nprint(y)\n")
    assert main(["generate", "sc2tune/tiny-starcoder2", "--file", "a.py", "--repo-path", "pkg/a.py",
                 "--repo-name", "proj", "--repo-file", "util.py"]) == 0
    assert capsys.readouterr().out.strip() == "MID"
    text = load_bundled_tokenizer().decode(seen["ids"], skip_special_tokens=False, clean_up_tokenization_spaces=False)
    assert text == ("<repo_name>proj<file_sep>util.py\nX = 1\n"
                    "<file_sep><fim_prefix>pkg/a.py\nimport util\n<fim_suffix>\nprint(y)\n<fim_middle>")
    assert main(["generate", "sc2tune/tiny-starcoder2", "--prompt", "x", "--repo-path", "a.py"]) == 1


def test_a_mode_the_run_was_not_trained_for_is_warned_about(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture,
                                                            short_context_model: Path):
    import shutil

    import yaml

    import sc2tune.generation as gen
    from sc2tune.inference import generate_text

    monkeypatch.setattr(gen, "_decode", lambda lm, ids, sampling, stops: [""])
    merged = tmp_path / "merged"
    shutil.copytree(short_context_model, merged)
    (merged / "recipe.yaml").write_text(yaml.safe_dump({"task": "fim", "data": {"train": "code/"}}))
    generate_text(str(merged), instruction="Reverse a list.", template="alpaca")
    assert "trained for task 'fim'" in caplog.text and "--instruction" in caplog.text
    caplog.clear()
    generate_text(str(merged), prefix="def f():", suffix="")
    assert "trained for task" not in caplog.text  # the mode it was trained for: no warning


def test_a_fifo_or_device_as_a_prompt_file_is_refused_at_once(tmp_path: Path, capsys: pytest.CaptureFixture):
    import os

    fifo = tmp_path / "pipe.py"
    os.mkfifo(fifo)  # reading it would block until someone writes
    for args in (["--file", str(fifo)], ["--file", "/dev/zero"],
                 ["--prefix", "x", "--repo-path", "a.py", "--repo-file", str(fifo)]):
        assert main(["generate", "sc2tune/tiny-starcoder2", *args]) == 1
        assert "not a regular file" in capsys.readouterr().err
