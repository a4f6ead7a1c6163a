"""How a HumanEval-format problem becomes a model's prompt, the way the run trained the model to read it.

Three kinds, by the problem and the run's saved recipe (:class:`PromptStyle`):

* **fim** (the problem has a ``suffix``: HumanEval-infilling, ``--fim``): PSM from token ids, the user's
  text always literal, exactly as :func:`sc2tune.generation.infill_prompt_ids` (and training,
  :mod:`sc2tune.data.fim`) spell it::

      <fim_prefix>{prompt}<fim_suffix>{suffix}<fim_middle>

  and, for a run trained with ``data.fim.repo_context``, in StarCoder2's repository layout, the problem
  being the one file ``{REPO_PATH}`` of the repository ``{REPO_NAME}``::

      <repo_name>{REPO_NAME}<file_sep><fim_prefix>{REPO_PATH}\\n{prompt}<fim_suffix>{suffix}<fim_middle>

  Generation stops at ``<|endoftext|>`` or ``<file_sep>``; the sample is the middle.
* **instruct** (no suffix, the run's task is instruct): the run's template (``data.template``) renders the
  record ``{"instruction": prompt, "input": ""}`` and the prompt is tokenised as training tokenises it
  (literal text, :mod:`sc2tune.data.instruct`); generation stops at ``<|endoftext|>``. The sample is the
  code of the answer's first fenced block (```` ```python ... ``` ````), else the whole answer: it is run
  after the problem's prompt (a complete function it writes replaces the prompt's stub).
* **completion** (otherwise): the prompt's tokens, left to right; stops at ``<|endoftext|>`` and at the
  usual HumanEval stop strings (:data:`STOP_STRINGS`: a new top-level ``def``/``class``/``if``/``print``,
  comment, decorator or code fence, as in the Codex and BigCode harnesses), the text cut at the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sc2tune.errors import UserError
from sc2tune.evaluation.problems import Problem

if TYPE_CHECKING:
    from sc2tune.data.templates import Template
    from sc2tune.recipe import Recipe

#: Stop strings for left-to-right HumanEval completions.
STOP_STRINGS = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n@", "\n```")
#: The repository a problem is placed in for a run trained with ``data.fim.repo_context``.
REPO_NAME = "human-eval"
#: The problem's file path in that repository.
REPO_PATH = "solution.py"

Kind = Literal["fim", "instruct", "completion"]
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class PromptStyle:
    """What of a run's recipe shapes its prompts: repository layout for FIM, the instruction template."""

    repo_context: bool = False
    template: Template | None = None  #: set for instruct runs only
    extra_stops: tuple[str, ...] = ()  #: the caller's stop strings, added to :data:`STOP_STRINGS`

    @classmethod
    def of(cls, recipe: Recipe | None, extra_stops: tuple[str, ...] = ()) -> PromptStyle:
        """The style of a run's saved recipe (None: a plain model, PSM without repository, no template)."""
        if recipe is None:
            return cls(extra_stops=extra_stops)
        template = None
        if recipe.task == "instruct":
            from sc2tune.data.templates import load_template

            template = load_template(recipe.data.template)
        return cls(repo_context=recipe.task == "fim" and recipe.data.fim.repo_context, template=template,
                   extra_stops=extra_stops)


@dataclass(frozen=True)
class Prompt:
    """One problem's prompt ids and its stop rules."""

    ids: list[int]
    stop_ids: tuple[int, ...]
    stop_strings: tuple[str, ...]
    kind: Kind


def build_prompt(tokenizer: Any, problem: Problem, style: PromptStyle) -> Prompt:
    """The prompt of ``problem`` for a model with ``tokenizer`` (module doc)."""
    from sc2tune.generation import InferenceModel, RepoContext, infill_prompt_ids
    from sc2tune.tokens import encode_texts, special_tokens

    if problem.suffix:
        st = special_tokens(tokenizer, need_fim=True)
        stops = (st.eos,) + ((st.file_sep,) if st.file_sep is not None else ())
        lm = InferenceModel(model=None, tokenizer=tokenizer, classifier=False, path=Path("."))
        repo = RepoContext(path=REPO_PATH, name=REPO_NAME) if style.repo_context else None
        return Prompt(infill_prompt_ids(lm, problem.prompt, problem.suffix, repo), stops, style.extra_stops, "fim")
    eos = special_tokens(tokenizer, need_fim=False).eos
    if style.template is not None:
        try:
            text = style.template.render_prompt({"instruction": problem.prompt, "input": ""})
        except (KeyError, IndexError) as err:
            raise UserError(f"template {style.template.source} needs the field {err} that a HumanEval problem "
                            "has not got (it gives instruction and input)",
                            hint="evaluate an instruct run whose template uses {instruction} and {input}") from None
        return Prompt(encode_texts(tokenizer, [text])[0], (eos,), style.extra_stops, "instruct")
    ids = tokenizer(problem.prompt, add_special_tokens=False)["input_ids"]
    return Prompt(ids, (eos,), (*STOP_STRINGS, *style.extra_stops), "completion")


def finish(prompt: Prompt, text: str) -> str:
    """The sample from the generated text: cut at the first stop string; an instruct answer's fenced code."""
    if prompt.kind == "instruct":
        fenced = _FENCE.search(text)
        text = fenced.group(1) if fenced else text
    cuts = [text.index(stop) for stop in prompt.stop_strings if stop in text]
    return text[: min(cuts)] if cuts else text
