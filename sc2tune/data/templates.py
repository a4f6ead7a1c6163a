"""Instruction templates (Alpaca-style), loaded from YAML.

A template file has ``prompt_no_input`` and ``response`` (``str.format`` strings over record fields),
optionally ``prompt_input`` and ``input_field``: a record whose ``input_field`` is a non-empty string is
rendered with ``prompt_input``, every other record with ``prompt_no_input`` (Stanford Alpaca's rule).
An example is ``prompt + response + <|endoftext|>``; prompt and response are tokenised separately so the
loss boundary falls exactly between them.

``data.template`` is a name (``alpaca`` -> ``data_templates/alpaca.yaml``, shipped with sc2tune) or a path
to a YAML file (resolved against the current directory).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sc2tune.errors import DataError

_KEYS = {"name", "description", "prompt_input", "prompt_no_input", "response", "input_field"}


def template_dirs() -> list[Path]:
    """Folders searched for a template name: the checkout's data_templates/, then the installed copy."""
    here = Path(__file__).resolve().parent.parent
    return [here.parent / "data_templates", here / "_data_templates"]


def _fields(fmt: str, where: str) -> list[str]:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError as err:
        raise DataError(f"{where}: bad format string ({err})", hint="write literal braces as {{ and }}") from None
    for name in names:
        if not name.isidentifier():
            raise DataError(f"{where}: placeholder '{{{name}}}' is not a plain field name",
                            hint="use {field}; write literal braces as {{ and }}")
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Template:
    """A prompt/response template (see module doc)."""

    name: str
    prompt_no_input: str
    response: str
    prompt_input: str | None = None
    input_field: str | None = None
    source: str = "<template>"

    @property
    def required(self) -> list[str]:
        """Fields every record must have (used by prompt_no_input and response)."""
        return list(dict.fromkeys(_fields(self.prompt_no_input, self.source) + _fields(self.response, self.source)))

    @property
    def optional(self) -> list[str]:
        """Fields only the with-input prompt uses (e.g. ``input``)."""
        extra = _fields(self.prompt_input, self.source) if self.prompt_input else []
        return [f for f in extra if f not in self.required]

    def render_prompt(self, record: dict[str, Any]) -> str:
        """The prompt text (everything before the response): ``prompt_input`` when the record's input field is a
        non-empty string, else ``prompt_no_input``."""
        value = record.get(self.input_field) if self.input_field is not None else None
        if self.prompt_input is not None and isinstance(value, str) and value != "":
            return self.prompt_input.format_map(record)
        return self.prompt_no_input.format_map(record)

    def render_response(self, record: dict[str, Any]) -> str:
        """The response text (without the end token)."""
        return self.response.format_map(record)

    def missing(self, record: dict[str, Any]) -> list[str]:
        """Required fields the record lacks (absent or null)."""
        return [f for f in self.required if record.get(f) is None]


def load_template(name_or_path: str) -> Template:
    """Load a template by name (data_templates/NAME.yaml) or from a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or "/" in name_or_path or "\\" in name_or_path:
        if not path.is_file():
            raise DataError(f"data.template: file '{name_or_path}' not found (tried {path.resolve()})",
                            hint="relative paths are resolved against the current directory")
    else:
        candidates = [d / f"{name_or_path}.yaml" for d in template_dirs()]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            names = sorted({p.stem for d in template_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise DataError(f"data.template: no template named '{name_or_path}'",
                            hint=f"available: {', '.join(names) or 'none'}; or give a path to a YAML file")
        path = found
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read the template ({err})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: a template must be a YAML mapping with prompt_no_input and response")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise DataError(f"{path}: unknown template key(s) {', '.join(unknown)}", hint=f"valid: {sorted(_KEYS)}")
    for key in ("prompt_no_input", "response"):
        if not isinstance(data.get(key), str):
            raise DataError(f"{path}: '{key}' must be a string")
    if ("prompt_input" in data) != ("input_field" in data):
        raise DataError(f"{path}: prompt_input and input_field go together",
                        hint="input_field names the field whose non-empty value selects prompt_input")
    template = Template(
        name=str(data.get("name", path.stem)),
        prompt_no_input=data["prompt_no_input"],
        response=data["response"],
        prompt_input=data.get("prompt_input"),
        input_field=data.get("input_field"),
        source=str(path),
    )
    if template.prompt_input is not None and template.input_field not in _fields(template.prompt_input, str(path)):
        raise DataError(f"{path}: prompt_input does not use its input_field '{{{template.input_field}}}'")
    _ = template.required, template.optional  # validate the format strings now
    return template
