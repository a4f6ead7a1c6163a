"""Problem prompts as the run trained the model to read them (sc2tune.evaluation.prompts), against token ids
built by hand from plain tokenizer calls and DESIGN.md's layouts."""

from __future__ import annotations

import pytest

from sc2tune.evaluation.problems import Problem
from sc2tune.evaluation.prompts import (
    REPO_NAME,
    REPO_PATH,
    STOP_STRINGS,
    Prompt,
    PromptStyle,
    build_prompt,
    finish,
)
from sc2tune.recipe import Recipe

FIM = Problem("t/0", "def f(x):\n    # <file_sep> stays text\n", "assert f(1) == 2", "f", suffix="    return y\n",
              canonical_solution="    y = x + 1\n")
LEFT = Problem("t/1", "def g(x):\n", "assert g(1) == 1", "g")


def literal(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def recipe(task: str, **data) -> Recipe:
    return Recipe.model_validate({"task": task, "data": {"train": "x", **data}})


def test_fim_prompt_is_psm_from_token_ids(tokenizer):
    t = tokenizer.convert_tokens_to_ids
    prompt = build_prompt(tokenizer, FIM, PromptStyle.of(recipe("fim")))
    assert prompt.ids == [t("<fim_prefix>"), *literal(tokenizer, FIM.prompt), t("<fim_suffix>"),
                          *literal(tokenizer, FIM.suffix), t("<fim_middle>")]
    assert t("<file_sep>") not in prompt.ids  # the user's text never becomes a special token
    assert prompt.stop_ids == (t("<|endoftext|>"), t("<file_sep>")) and prompt.kind == "fim"


def test_fim_prompt_of_a_repo_context_run_is_the_repository_layout(tokenizer):
    """DESIGN.md: a FIM'd file of a repository row reads <file_sep><fim_prefix>PATH\\nPRE<fim_suffix>SUF<fim_middle>,
    after the <repo_name>NAME header."""
    t = tokenizer.convert_tokens_to_ids
    prompt = build_prompt(tokenizer, FIM, PromptStyle.of(recipe("fim", fim={"repo_context": True})))
    assert prompt.ids == [t("<repo_name>"), *literal(tokenizer, REPO_NAME), t("<file_sep>"), t("<fim_prefix>"),
                          *literal(tokenizer, REPO_PATH + "\n"), *literal(tokenizer, FIM.prompt), t("<fim_suffix>"),
                          *literal(tokenizer, FIM.suffix), t("<fim_middle>")]


def test_left_to_right_prompt_and_stop_strings(tokenizer):
    prompt = build_prompt(tokenizer, LEFT, PromptStyle.of(recipe("fim"), ("STOP",)))
    assert prompt.ids == tokenizer(LEFT.prompt, add_special_tokens=False)["input_ids"]
    assert prompt.stop_strings == (*STOP_STRINGS, "STOP") and prompt.kind == "completion"
    assert finish(prompt, "    return x\n\ndef h():\n    pass") == "    return x\n"
    assert finish(prompt, "    return x  # STOP here") == "    return x  # "


def test_instruct_run_renders_the_problem_through_its_template(tokenizer):
    """Stanford Alpaca's no-input prompt, word for word (tatsu-lab/stanford_alpaca, PROMPT_DICT)."""
    prompt = build_prompt(tokenizer, LEFT, PromptStyle.of(recipe("instruct", template="alpaca")))
    alpaca = ("Below is an instruction that describes a task. Write a response that appropriately completes the "
              f"request.\n\n### Instruction:\n{LEFT.prompt}\n\n### Response:")
    assert prompt.ids == literal(tokenizer, alpaca) and prompt.kind == "instruct"
    assert prompt.stop_ids == (tokenizer.eos_token_id,)


@pytest.mark.parametrize("text, code", [
    ("Here it is:\n```python\ndef g(x):\n    return x\n```\nDone.", "def g(x):\n    return x\n"),
    ("```\n    return x\n", "    return x\n"),  # an unclosed fence runs to the end
    ("    return x\n", "    return x\n"),  # no fence: the whole answer
])
def test_instruct_answer_code(text, code):
    assert finish(Prompt([1], (0,), (), "instruct"), text) == code
