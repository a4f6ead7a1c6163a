"""``sc2tune generate`` and ``sc2tune classify`` as typed API functions over :mod:`sc2tune.generation`, from a
folder PATH (model, merged, adapter or run folder). Light to import: torch comes with the model.

The mode of :func:`generate_text` comes from the arguments given: ``prompt`` or ``file`` completes; ``prefix`` /
``suffix``, or a ``file`` with a ``<cursor>`` marker, infills; ``instruction`` (with ``input``) answers through
the run's template. An infill with ``repo_path`` (and optionally ``repo_name`` and ``repo_file`` context files,
read from disk and named by the path given) is prompted in StarCoder2's repository layout
(:func:`sc2tune.generation.infill_prompt_ids`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from sc2tune.clihelp import Help, TrustRemoteCode
from sc2tune.errors import UserError
from sc2tune.recipe import Dtype
from sc2tune.sampling import DEFAULTS, MAX_N, MAX_STOP

if TYPE_CHECKING:
    from sc2tune.generation import InferenceModel, Prediction

log = logging.getLogger(__name__)

#: Largest prompt file read: StarCoder2's 16384-token context is well under 1 MB of code.
MAX_PROMPT_FILE_BYTES = 8 << 20

Folder = Annotated[str | Path, Help("model folder, merged folder, adapter folder or run folder", metavar="PATH",
                                    positional=True)]
WeightsDtype = Annotated[Dtype, Help("weights dtype (auto: bfloat16 on a GPU that supports it, else float32)")]


def generate_text(
    path: Folder,
    *,
    prompt: Annotated[str | None, Help("complete this text")] = None,
    file: Annotated[str | None, Help("complete this file, or infill it at its `<cursor>` marker")] = None,
    prefix: Annotated[str | None, Help("FIM: code before the hole (prints only the infill)")] = None,
    suffix: Annotated[str | None, Help("FIM: code after the hole")] = None,
    repo_path: Annotated[str | None, Help(
        "FIM: the infilled file's path in its repository (StarCoder2's repository layout)", metavar="PATH")] = None,
    repo_name: Annotated[str | None, Help("FIM with --repo-path: the repository's name", metavar="NAME")] = None,
    repo_file: Annotated[list[str] | None, Help(
        "FIM with --repo-path: another file of the repository, put before it (repeatable)", metavar="FILE")] = None,
    instruction: Annotated[str | None, Help("answer an instruction through the run's template")] = None,
    input: Annotated[str | None, Help("optional input for --instruction")] = None,
    template: Annotated[str | None, Help("template name or YAML path (default: the run's data.template)")] = None,
    max_new_tokens: Annotated[int, Help("tokens to generate at most")] = DEFAULTS["max_tokens"],
    temperature: Annotated[float, Help("sampling temperature, 0 to 2; 0 = greedy")] = DEFAULTS["temperature"],
    top_p: Annotated[float, Help("nucleus sampling, in (0, 1]")] = DEFAULTS["top_p"],
    top_k: Annotated[int, Help("sample from the k most probable tokens only; 0 = off")] = DEFAULTS["top_k"],
    repetition_penalty: Annotated[float, Help(
        "divide a seen token's positive logit by this (> 0; 1 = none)")] = DEFAULTS["repetition_penalty"],
    presence_penalty: Annotated[float, Help(
        "subtract this from a generated token's logit, -2 to 2")] = DEFAULTS["presence_penalty"],
    frequency_penalty: Annotated[float, Help(
        "subtract this per occurrence of a generated token, -2 to 2")] = DEFAULTS["frequency_penalty"],
    n: Annotated[int, Help(f"responses to generate, 1 to {MAX_N}")] = DEFAULTS["n"],
    stop: Annotated[list[str] | None, Help(f"stop at this text (repeatable, at most {MAX_STOP})",
                                           metavar="TEXT")] = None,
    seed: Annotated[int | None, Help("seed for sampling")] = None,
    dtype: WeightsDtype = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> list[str]:
    """The ``n`` completions, infills or answers (see the module docstring) of the model in ``path``."""
    from sc2tune.generation import (
        CURSOR,
        RepoContext,
        Sampling,
        generate_responses,
        infill_responses,
        instruct_responses,
        load_for_inference,
        split_cursor,
    )

    modes = {"--prompt": prompt is not None, "--file": file is not None,
             "--prefix/--suffix": prefix is not None or suffix is not None, "--instruction": instruction is not None}
    chosen = [name for name, given in modes.items() if given]
    if len(chosen) != 1:
        raise UserError(f"give exactly one of --prompt, --file, --prefix/--suffix, --instruction "
                        f"(got {', '.join(chosen) or 'none'})")
    if input is not None and instruction is None:
        raise UserError("--input goes with --instruction")
    if template is not None and instruction is None:
        raise UserError("--template goes with --instruction")
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                        repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                        frequency_penalty=frequency_penalty, n=n, stop=tuple(stop or ()), seed=seed)
    if file is not None:
        text = read_prompt_file("--file", file)
        if CURSOR in text:
            prefix, suffix = split_cursor(text)
        else:
            prompt = text
    infilling = prefix is not None or suffix is not None
    if (repo_name is not None or repo_file) and repo_path is None:
        raise UserError("--repo-name and --repo-file go with --repo-path (the infilled file's path in the repository)")
    if repo_path is not None and not infilling:
        raise UserError("--repo-path goes with an infill (--prefix/--suffix, or a --file with a <cursor> marker)")
    repo = None
    if repo_path is not None:
        context = [(name, read_prompt_file("--repo-file", name)) for name in repo_file or ()]
        repo = RepoContext(repo_path, repo_name, tuple(context))
    lm = load_for_inference(path, dtype=dtype, trust_remote_code=trust_remote_code)
    warn_if_untrained_mode(lm, "instruct" if instruction is not None else "fim" if infilling else None)
    if instruction is not None:
        return instruct_responses(lm, instruction, input, template=template, sampling=sampling)
    if infilling:
        return infill_responses(lm, prefix or "", suffix or "", sampling, repo=repo)
    assert prompt is not None
    return generate_responses(lm, prompt, sampling)


def read_prompt_file(flag: str, name: str) -> str:
    """A prompt file's text: a regular file (a FIFO or device would block or never end) of bounded size."""
    import stat

    try:
        info = Path(name).stat()
        if not stat.S_ISREG(info.st_mode):
            raise UserError(f"cannot read {flag} {name}: not a regular file", hint="give a text file")
        if info.st_size > MAX_PROMPT_FILE_BYTES:
            raise UserError(f"cannot read {flag} {name}: {info.st_size:,} bytes",
                            hint=f"a prompt file holds at most {MAX_PROMPT_FILE_BYTES >> 20} MB")
        return Path(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read {flag} {name}: {err}") from None


def warn_if_untrained_mode(lm: InferenceModel, mode: str | None) -> None:
    """Warn when the run was trained for another task than the mode asked for (its saved recipe says which)."""
    if mode is None or lm.task is None or lm.task == mode:
        return
    asked = {"instruct": "--instruction", "fim": "--prefix/--suffix (FIM infill)"}[mode]
    log.warning("%s was trained for task '%s', not '%s': %s uses a prompt layout it did not learn, so expect "
                "the base model's behaviour at best", lm.path, lm.task, mode, asked)


def classify_texts(
    path: Annotated[str | Path, Help("classifier folder (merged or model), adapter folder or run folder",
                                     metavar="PATH", positional=True)],
    *,
    text: Annotated[list[str] | None, Help("a text to classify (repeatable)")] = None,
    file: Annotated[str | None, Help("texts to classify: one per line, or JSONL with a text field")] = None,
    column: Annotated[str, Help("field holding the text in a JSONL --file")] = "text",
    dtype: WeightsDtype = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> list[Prediction]:
    """Label each text (``text``, or the lines of ``file``) with the classifier in ``path``."""
    from sc2tune.generation import classify, load_for_inference, read_texts

    if bool(text) == (file is not None):
        raise UserError("give --text (one or more) or --file, not both")
    items = list(text) if text else read_texts(file, column=column)  # type: ignore[arg-type]
    if not items:
        raise UserError(f"{file} holds no texts")
    return classify(load_for_inference(path, dtype=dtype, trust_remote_code=trust_remote_code), items)
