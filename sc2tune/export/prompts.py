"""Held-out prompts for ``--verify``: fill-in-the-middle and left-to-right cuts of code, and instructions.

Code comes from the run's evaluation folders (``data.eval`` naming code folders, as the FIM quickstart does),
else from the bundled sample repositories the quickstart holds out (``geometry``, ``textstats``). Prompt ``i``
cuts file ``i mod n`` (files in sorted order) at ``(i // n + 1) / 4`` of its length, never inside a file's
first or last 16 characters::

    fim   <fim_prefix> PRE <fim_suffix> SUF <fim_middle>     PRE: up to 400 characters before the cut,
                                                              SUF: up to 200 characters after it + 40
    l2r   PRE                                                 up to 400 characters before the cut

alternating fim, l2r. An instruction run's prompts alternate its template's rendering of a record (the run's
``data.train`` JSON-lines file, else the bundled ``instruct.jsonl``, last records first) with code prompts.
Prompts are token ids, built as training builds them (each part tokenised alone, special tokens by id), and the
same ids go to both engines; the texts are kept to compare the two tokenizers too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sc2tune.errors import UserError
from sc2tune.recipe import Recipe
from sc2tune.tokens import encode_texts, token_id

_PACKAGE = Path(__file__).resolve().parent.parent
#: The sample repositories the quickstart never trains on, and the instruction samples.
HELD_OUT = ("geometry", "textstats")
SAMPLE_DIRS = (_PACKAGE.parent / "data_templates" / "samples", _PACKAGE / "_data_templates" / "samples")
PREFIX_CHARS, SUFFIX_CHARS, GAP_CHARS = 400, 200, 40


@dataclass(frozen=True)
class Prompt:
    """One verification prompt: its kind (fim, l2r, instruct), ids and the text they render."""

    kind: str
    ids: list[int]
    text: str


def _samples() -> Path:
    found = next((d for d in SAMPLE_DIRS if d.is_dir()), None)
    if found is None:
        raise UserError("sc2tune's bundled sample files are missing", hint="reinstall sc2tune")
    return found


def _code_files(recipe: Recipe | None) -> list[Path]:
    folders: list[Path] = []
    if recipe is not None and isinstance(recipe.data.eval, list):
        folders = [Path(p) for p in recipe.data.eval if Path(p).is_dir()]
    if not folders:
        folders = [_samples() / "code" / name for name in HELD_OUT]
    files = sorted(f for d in folders for f in d.rglob("*.py") if f.is_file())
    files = [f for f in files if len(f.read_text(encoding="utf-8", errors="replace")) > 64]
    if not files:
        raise UserError("no code files (*.py) to build verification prompts from")
    return files


def _records(recipe: Recipe) -> list[dict[str, Any]]:
    train = recipe.data.train
    candidates = [Path(p) for p in ([train] if isinstance(train, str) else train or [])]
    file = next((p for p in candidates if p.suffix == ".jsonl" and p.is_file()), _samples() / "instruct.jsonl")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [json.loads(line) for line in reversed(lines)]


def code_prompts(tokenizer: Any, count: int, recipe: Recipe | None) -> list[Prompt]:
    """``count`` code prompts, alternating fim and l2r (see the module docstring)."""
    files = _code_files(recipe)
    pre_id, suf_id, mid_id = (token_id(tokenizer, t) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))
    prompts: list[Prompt] = []
    for i in range(count):
        text = files[i % len(files)].read_text(encoding="utf-8", errors="replace")
        cut = min(max(16, len(text) * ((i // len(files)) % 3 + 1) // 4), len(text) - 16)
        prefix = text[max(0, cut - PREFIX_CHARS):cut]
        if i % 2 == 0:
            suffix = text[cut + GAP_CHARS:cut + GAP_CHARS + SUFFIX_CHARS]
            pre, suf = encode_texts(tokenizer, [prefix, suffix])
            ids = [pre_id, *pre, suf_id, *suf, mid_id]
            prompts.append(Prompt("fim", ids, f"<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>"))
        else:
            prompts.append(Prompt("l2r", encode_texts(tokenizer, [prefix])[0], prefix))
    return prompts


def verify_prompts(tokenizer: Any, count: int, recipe: Recipe | None) -> list[Prompt]:
    """The prompts of a run: code prompts, alternating with instructions for an instruction run."""
    if recipe is None or recipe.task != "instruct" or not recipe.data.template:
        return code_prompts(tokenizer, count, recipe)
    from sc2tune.data.templates import load_template

    template = load_template(recipe.data.template)
    records = [r for r in _records(recipe) if not template.missing(r)]
    code = code_prompts(tokenizer, count // 2, recipe)
    prompts: list[Prompt] = []
    for i in range(count):
        if i % 2 == 0 and records:
            text = template.render_prompt(records[(i // 2) % len(records)])
            prompts.append(Prompt("instruct", encode_texts(tokenizer, [text])[0], text))
        elif code:
            prompts.append(code.pop(0))
    return prompts
