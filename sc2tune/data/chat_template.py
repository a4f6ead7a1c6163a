"""A Jinja chat template that renders a chat exactly as an instruction template renders a record.

An engine's chat endpoint (llama.cpp, vLLM, TGI, transformers' ``apply_chat_template``) turns messages into a
prompt with the model's chat template. For a run trained with an Alpaca-style template (:mod:`.templates`) the
chat must become the very text training saw::

    [system?, user]            -> prompt(record)                              + response prefix (generation)
    [system?, user, assistant] -> prompt(record) + response(record) + eos_token

where ``record`` has the user message as the template's one prompt field (Alpaca: ``instruction``) and the
system message, when the template has ``prompt_input``, as its ``input_field`` (a non-empty system message
selects ``prompt_input``, as a non-empty input does; without ``prompt_input`` the system message is not
rendered). Later user/assistant pairs repeat the same layout. The response template's text before its field
is the generation prompt's tail (``"{output}"``: none). Literal text is written as Jinja string expressions,
so the result is the same with or without ``trim_blocks``/``lstrip_blocks`` (transformers and
llama-cpp-python turn both on).
"""

from __future__ import annotations

import json
import logging
import string
from typing import TYPE_CHECKING

from sc2tune.data.templates import Template, load_template
from sc2tune.errors import DataError

if TYPE_CHECKING:
    from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)


def _literal(text: str) -> str:
    """``text`` as a Jinja expression (a JSON string literal: Jinja reads the same escapes)."""
    return "{{ " + json.dumps(text, ensure_ascii=True) + " }}" if text else ""


def _pieces(fmt: str, where: str) -> list[tuple[str, str | None]]:
    """(literal, field or None) pieces of a ``str.format`` string; conversions and format specs refused."""
    pieces: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in string.Formatter().parse(fmt):
        if field is not None and (spec or conversion):
            raise DataError(f"{where}: '{{{field}{'!' + conversion if conversion else ''}"
                            f"{':' + spec if spec else ''}}}' has a conversion or format spec a chat template "
                            "cannot reproduce", hint="use plain {field} placeholders")
        pieces.append((literal, field))
    return pieces


def _render(fmt: str, values: dict[str, str], where: str) -> str:
    """Jinja for ``fmt`` with each field replaced by the Jinja expression ``values[field]``."""
    out = []
    for literal, field in _pieces(fmt, where):
        out.append(_literal(literal))
        if field is not None:
            if field not in values:
                raise DataError(f"{where}: field '{{{field}}}' is none a chat provides",
                                hint="a chat template maps the user message to the one prompt field (and the "
                                "system message to input_field)")
            out.append("{{ " + values[field] + " }}")
    return "".join(out)


def chat_template(template: Template) -> str:
    """The Jinja chat template of ``template`` (see the module docstring); a DataError when the template has
    not exactly one prompt field besides its input field, or its response not exactly one field."""
    where = template.source
    prompt_fields = [f for _, f in _pieces(template.prompt_no_input, where) if f is not None]
    response = _pieces(template.response, where)
    response_fields = [f for _, f in response if f is not None]
    user_fields = sorted(set(prompt_fields) - set(response_fields))
    if len(user_fields) != 1 or len(response_fields) != 1 or set(prompt_fields) & set(response_fields):
        raise DataError(f"{where}: a chat template needs one prompt field (the user message) and one response "
                        f"field; this template's prompt uses {prompt_fields}, its response {response_fields}",
                        hint="serve it with a completion endpoint and the rendered prompt instead")
    user = user_fields[0]
    at = next(i for i, (_, f) in enumerate(response) if f is not None)
    head = response[at][0]  # the response's text before its field, then after it
    tail = "".join(literal for literal, _ in response[at + 1:])
    values = {user: "message['content']"}
    no_input = _render(template.prompt_no_input, values, where)
    if template.prompt_input is not None and template.input_field is not None:
        with_input = _render(template.prompt_input, {**values, template.input_field: "system"}, where)
        prompt = ("{%- if system is string and system != '' -%}" + with_input + "{%- else -%}" + no_input
                  + "{%- endif -%}")
    else:
        prompt = no_input
    return (
        "{%- set system = messages[0]['content'] if messages and messages[0]['role'] == 'system' else '' -%}"
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}" + prompt +
        "{%- elif message['role'] == 'assistant' -%}" + _literal(head) + "{{ message['content'] }}"
        + _literal(tail) + "{{ eos_token }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}" + _literal(head) + "{%- endif -%}"
    )


def recipe_chat_template(recipe: Recipe | None) -> str | None:
    """The chat template of an instruction run's recipe (``task: instruct`` with ``data.template``), else None;
    a template no chat can render (:func:`chat_template`'s DataError) is logged and gives None."""
    if recipe is None or recipe.task != "instruct" or not recipe.data.template:
        return None
    try:
        return chat_template(load_template(recipe.data.template))
    except DataError as err:
        log.warning("no chat template: %s", err)
        return None
