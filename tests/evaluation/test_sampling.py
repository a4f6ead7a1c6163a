"""HumanEval-format sample generation (sc2tune.evaluation.sampling), with the batched decoder stubbed.

The stub answers each prompt with the token ids of a text naming the seed it was called with, so the file
says which pass wrote which sample; the prompts it receives are checked against hand-built token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sc2tune.decoding as decoding
import sc2tune.generation as generation
from sc2tune.errors import UserError
from sc2tune.evaluation.problems import Problem
from sc2tune.evaluation.prompts import STOP_STRINGS
from sc2tune.evaluation.sampling import generate_samples

PROBLEMS = {
    "t/0": Problem("t/0", "def add(a, b):\n", "assert add(1, 2) == 3", "add"),
    "t/1": Problem("t/1", "def sub(a, b):\n    return ", "assert sub(3, 1) == 2", "sub", suffix="\n"),
}


@pytest.fixture
def calls(monkeypatch, tokenizer):
    """Record what sampling asks of the decoder; answer ``L{seed}`` (+ a stop string's tail) or ``M{seed}``."""
    seen: list[dict] = []
    lm = generation.InferenceModel(model="the model", tokenizer=tokenizer, classifier=False, path=Path("m"))
    monkeypatch.setattr(generation, "load_for_inference", lambda path, *, trust_remote_code=False: lm)

    def fake_generate_batch(model, prompts, *, pad_id, stop_ids, max_new_tokens, batch_size, temperature, top_p,
                            seed, stop_strings, tokenizer, on_batch):
        seen.append({"model": model, "prompts": [list(p) for p in prompts], "seed": seed, "stop_ids": stop_ids,
                     "stop_strings": stop_strings, "temperature": temperature, "pad": pad_id})
        text = f"L{seed}\ndef more():" if stop_strings else f"M{seed}"
        return [tokenizer(text, add_special_tokens=False)["input_ids"] for _ in prompts]

    monkeypatch.setattr(decoding, "generate_batch", fake_generate_batch)
    return seen


def test_left_to_right_and_fim_problems_seeded_per_sample(tmp_path, calls, tokenizer):
    out = generate_samples(PROBLEMS, "some/model", tmp_path / "s" / "samples.jsonl", n_samples=2,
                           sampling=generation.Sampling(seed=10, temperature=0.5), show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"task_id": "t/0", "completion": "L10"}, {"task_id": "t/0", "completion": "L11"},
                    {"task_id": "t/1", "completion": "M10"}, {"task_id": "t/1", "completion": "M11"}]
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    tok = tokenizer.convert_tokens_to_ids
    left = [c for c in calls if c["stop_strings"]]
    fim = [c for c in calls if not c["stop_strings"]]
    assert [c["seed"] for c in left] == [10, 11] and [c["seed"] for c in fim] == [10, 11]
    assert left[0]["prompts"] == [ids("def add(a, b):\n")] and left[0]["stop_ids"] == (0,)
    assert tuple(left[0]["stop_strings"]) == STOP_STRINGS
    assert fim[0]["prompts"] == [[tok("<fim_prefix>"), *ids("def sub(a, b):\n    return "), tok("<fim_suffix>"),
                                  *ids("\n"), tok("<fim_middle>")]]
    assert fim[0]["stop_ids"] == (0, tok("<file_sep>"))
    assert {c["pad"] for c in calls} == {tok("<fim_pad>")} and {c["model"] for c in calls} == {"the model"}
    assert [p.name for p in out.parent.iterdir()] == ["samples.jsonl"]  # no temp file left


def test_greedy_runs_once_and_repeats(tmp_path, calls):
    out = generate_samples(PROBLEMS, "m", tmp_path / "samples.jsonl", n_samples=3,
                           sampling=generation.Sampling(seed=4, temperature=0), show_progress=False)
    rows = [json.loads(line)["completion"] for line in out.read_text().splitlines()]
    assert rows == ["L4"] * 3 + ["M4"] * 3
    assert len(calls) == 2  # one pass per stop-rule group


def test_a_failure_leaves_no_partial_file(tmp_path, calls, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(decoding, "generate_batch", broken)
    with pytest.raises(RuntimeError):
        generate_samples(PROBLEMS, "m", tmp_path / "samples.jsonl", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_zero_samples_is_a_user_error(tmp_path, calls):
    with pytest.raises(UserError, match="--n-samples"):
        generate_samples(PROBLEMS, "m", tmp_path / "samples.jsonl", n_samples=0, show_progress=False)
