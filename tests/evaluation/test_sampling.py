"""HumanEval-format sample generation (sc2tune.evaluation.sampling), with the generation layer stubbed."""

from __future__ import annotations

import json

import pytest

import sc2tune.generation as generation
from sc2tune.errors import UserError
from sc2tune.evaluation.problems import Problem
from sc2tune.evaluation.sampling import STOP_STRINGS, generate_samples

PROBLEMS = {
    "t/0": Problem("t/0", "def add(a, b):\n", "assert add(1, 2) == 3", "add"),
    "t/1": Problem("t/1", "def sub(a, b):\n    return ", "assert sub(3, 1) == 2", "sub", suffix="\n"),
}


@pytest.fixture
def calls(monkeypatch):
    """Record what sampling asks of the generation layer; answer with the seed, so the file says which."""
    seen: list[tuple] = []
    monkeypatch.setattr(generation, "load_for_inference", lambda path, *, trust_remote_code=False: f"model at {path}")

    def fake_generate(lm, prompt, sampling):
        seen.append(("generate", lm, prompt, sampling.seed, sampling.stop, sampling.temperature))
        return f"L{sampling.seed}"

    def fake_infill(lm, prefix, suffix, sampling):
        seen.append(("infill", lm, prefix + "|" + suffix, sampling.seed, sampling.stop, sampling.temperature))
        return f"M{sampling.seed}"

    monkeypatch.setattr(generation, "generate", fake_generate)
    monkeypatch.setattr(generation, "infill", fake_infill)
    return seen


def test_left_to_right_and_fim_problems_seeded_per_sample(tmp_path, calls):
    out = generate_samples(PROBLEMS, "some/model", tmp_path / "s" / "samples.jsonl", n_samples=2,
                           sampling=generation.Sampling(seed=10, temperature=0.5), show_progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [{"task_id": "t/0", "completion": "L10"}, {"task_id": "t/0", "completion": "L11"},
                    {"task_id": "t/1", "completion": "M10"}, {"task_id": "t/1", "completion": "M11"}]
    assert calls[0] == ("generate", "model at some/model", "def add(a, b):\n", 10, STOP_STRINGS, 0.5)
    assert calls[2] == ("infill", "model at some/model", "def sub(a, b):\n    return |\n", 10, (), 0.5)
    assert [p.name for p in out.parent.iterdir()] == ["samples.jsonl"]  # no temp file left


def test_a_failure_leaves_no_partial_file(tmp_path, calls, monkeypatch):
    def broken(lm, prompt, sampling):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(generation, "generate", broken)
    with pytest.raises(RuntimeError):
        generate_samples(PROBLEMS, "m", tmp_path / "samples.jsonl", show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_zero_samples_is_a_user_error(tmp_path, calls):
    with pytest.raises(UserError, match="--n-samples"):
        generate_samples(PROBLEMS, "m", tmp_path / "samples.jsonl", n_samples=0, show_progress=False)
