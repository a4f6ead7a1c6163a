"""Instruction templates (sc2tune.data.templates): Stanford Alpaca's text, word for word, and bad files."""

from __future__ import annotations

import pytest

from sc2tune.data.templates import load_template
from sc2tune.errors import DataError

# tatsu-lab/stanford_alpaca train.py PROMPT_DICT, typed out here independently of data_templates/
ALPACA_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further context. "
                "Write a response that appropriately completes the request.\n\n"
                "### Instruction:\nSort it\n\n### Input:\n3 1 2\n\n### Response:")
ALPACA_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.\n\n### Instruction:\nSort it\n\n### Response:")


def test_alpaca_renders_stanford_alpaca_prompts():
    template = load_template("alpaca")
    with_input = {"instruction": "Sort it", "input": "3 1 2", "output": "1 2 3"}
    assert template.render_prompt(with_input) == ALPACA_INPUT
    assert template.render_response(with_input) == "1 2 3"
    for record in ({"instruction": "Sort it", "output": "x"}, {"instruction": "Sort it", "input": "", "output": "x"},
                   {"instruction": "Sort it", "input": None, "output": "x"}):
        assert template.render_prompt(record) == ALPACA_NO_INPUT  # absent, empty or null input
    assert template.required == ["instruction", "output"] and template.optional == ["input"]
    assert template.missing({"instruction": "Sort it", "output": None}) == ["output"]


def write(tmp_path, text):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    return str(path)


def test_a_template_file_with_literal_braces(tmp_path):
    template = load_template(write(tmp_path, 'prompt_no_input: "Q: {question} {{json}}\\nA:"\nresponse: " {answer}"\n'))
    assert template.render_prompt({"question": "why"}) == "Q: why {json}\nA:"
    assert template.render_response({"answer": "because"}) == " because"
    assert template.name == "t" and template.required == ["question", "answer"]


@pytest.mark.parametrize(("text", "fragment"), [
    ('prompt_no_input: "{q}"\nresponse: "{a}"\ncolour: red\n', "unknown template key(s) colour"),
    ('prompt_no_input: "{q}"\n', "'response' must be a string"),
    ('prompt_no_input: "{q}"\nresponse: "{a}"\nprompt_input: "{q} {i}"\n', "go together"),
    ('prompt_no_input: "{q}"\nresponse: "{a}"\nprompt_input: "{q}"\ninput_field: i\n', "does not use its input_field"),
    ('prompt_no_input: "{q.x}"\nresponse: "{a}"\n', "not a plain field name"),
    ('prompt_no_input: "{q"\nresponse: "{a}"\n', "bad format string"),
    ("- a list\n", "must be a YAML mapping"),
])
def test_bad_template_files_name_the_problem(tmp_path, text, fragment):
    with pytest.raises(DataError) as err:
        load_template(write(tmp_path, text))
    assert fragment in str(err.value)


def test_unknown_name_lists_the_shipped_templates(tmp_path):
    with pytest.raises(DataError) as err:
        load_template("alpacca")
    assert "no template named 'alpacca'" in str(err.value) and "alpaca" in err.value.hint
    with pytest.raises(DataError, match="not found"):
        load_template(str(tmp_path / "missing.yaml"))
