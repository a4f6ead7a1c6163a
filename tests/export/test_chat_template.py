"""Instruction runs serve with their template: a chat renders exactly as the run's template renders a record.

Reference: sc2tune's own template rendering (:class:`~sc2tune.data.templates.Template`, what training tokenises),
for every template shipped in data_templates/; the renderers are the engines' own: Jinja2 configured as
transformers and llama-cpp-python configure it, transformers' ``apply_chat_template`` on the merged folder's
tokenizer, and llama-cpp-python's ``Jinja2ChatFormatter`` on the GGUF's ``tokenizer.chat_template``.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import jinja2
import pytest

from sc2tune.data.chat_template import chat_template
from sc2tune.data.templates import load_template, template_dirs
from sc2tune.errors import DataError
from sc2tune.export.api import export_gguf
from sc2tune.recipe import load_recipe, recipe_to_yaml

from .conftest import make_lora, require_llama_cpp

EOS = "<|endoftext|>"
TEMPLATES = sorted(p.stem for d in template_dirs()[:1] for p in d.glob("*.yaml"))
RECORDS = [{"instruction": "Reverse a list in Python.", "input": "", "output": "xs[::-1]"},
           {"instruction": "Sum the numbers.", "input": "1, 2, 3\n{braces} and \"quotes\" \\n", "output": "6"},
           {"instruction": "Ünïcode – “quoted” {x} %s", "input": "  spaced  ", "output": " 42\n"}]


def render(template: str, messages: list[dict[str, str]], generation: bool) -> str:
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)  # transformers' and llama-cpp-python's
    return env.from_string(template).render(messages=messages, add_generation_prompt=generation, eos_token=EOS)


def chat_of(record: dict[str, str], with_answer: bool) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": record["input"]}] if record["input"] else []
    messages.append({"role": "user", "content": record["instruction"]})
    if with_answer:
        messages.append({"role": "assistant", "content": record["output"]})
    return messages


def test_every_shipped_template_is_tested() -> None:
    assert {"alpaca", "alpaca_no_input"} <= set(TEMPLATES)


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("record", RECORDS, ids=["no-input", "input", "unicode"])
def test_a_chat_renders_as_the_template_renders_the_record(name: str, record: dict[str, str]) -> None:
    template = load_template(name)
    jinja = chat_template(template)
    shown = record if template.prompt_input else {**record, "input": ""}  # no input section: no system message
    prompt = template.render_prompt(shown)
    assert render(jinja, chat_of(shown, False), True) == prompt
    assert render(jinja, chat_of(shown, True), False) == prompt + template.render_response(shown) + EOS


def test_a_template_a_chat_cannot_fill_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "two.yaml"
    file.write_text('prompt_no_input: "Q: {question}\\nContext: {context}\\nA:"\nresponse: "{answer}"\n')
    with pytest.raises(DataError, match="one prompt field"):
        chat_template(load_template(str(file)))


@pytest.fixture(scope="module")
def instruct_adapter(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter saved with the alpaca quickstart's resolved recipe (an instruction run)."""
    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "quickstart" / "alpaca.yaml")
    return make_lora(tiny_dir, tmp_path_factory.mktemp("instruct") / "adapter", recipe=recipe_to_yaml(recipe))


def test_the_gguf_and_the_merged_folder_carry_the_chat_template(instruct_adapter: Path, tmp_path: Path,
                                                                tokenizer) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    from sc2tune.merging import merge

    require_llama_cpp()
    alpaca = load_template("alpaca")
    record = RECORDS[1]
    expected = alpaca.render_prompt(record)
    reader = gguf.GGUFReader(export_gguf(instruct_adapter, tmp_path / "instruct.gguf", dtype="f32"))
    template = reader.fields["tokenizer.chat_template"].contents()
    prompt = Jinja2ChatFormatter(template, eos_token=EOS, bos_token=EOS)(messages=chat_of(record, False)).prompt
    assert prompt == expected
    merged = merge(instruct_adapter, tmp_path / "merged", verify=False, progress=False).out_dir
    hf = AutoTokenizer.from_pretrained(merged)
    assert hf.apply_chat_template(chat_of(record, False), tokenize=False, add_generation_prompt=True) == expected
