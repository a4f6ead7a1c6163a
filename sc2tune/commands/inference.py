"""Commands that use a trained model: ``generate`` (complete, infill, follow an instruction) and ``classify``.

The mode of ``generate`` comes from the options given: ``--prompt`` or ``--file`` completes; ``--prefix`` /
``--suffix``, or a ``--file`` with a ``<cursor>`` marker, infills; ``--instruction`` (with ``--input``) answers
through the run's template. An infill with ``--repo-path`` (and optionally ``--repo-name`` and ``--repo-file``
context files, read from disk and named by the path given) is prompted in StarCoder2's repository layout
(``<repo_name>NAME<file_sep>PATH\\nCODE ... <file_sep><fim_prefix>PATH\\nPREFIX<fim_suffix>SUFFIX<fim_middle>``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from sc2tune.commands.options import Dtype, TrustRemoteCode
from sc2tune.errors import UserError

if TYPE_CHECKING:
    from sc2tune.generation import InferenceModel

log = logging.getLogger(__name__)

PathArg = Annotated[str, typer.Argument(
    metavar="PATH", help="model folder, merged folder, adapter folder or run folder", show_default=False)]
DtypeOption = Annotated[Dtype, typer.Option(
    help="weights dtype (auto: bfloat16 on a GPU that supports it, else float32)")]

#: The marker of the hole in a ``--file`` to infill (what :func:`sc2tune.generation.split_cursor` splits at).
CURSOR = "<cursor>"

#: Largest prompt file read: StarCoder2's 16384-token context is well under 1 MB of code.
MAX_PROMPT_FILE_BYTES = 8 << 20


def generate(
    path: PathArg,
    prompt: Annotated[str | None, typer.Option(help="complete this text")] = None,
    file: Annotated[str | None, typer.Option(help="complete this file, or infill it at its `<cursor>` marker")] = None,
    prefix: Annotated[str | None, typer.Option(help="FIM: code before the hole (prints only the infill)")] = None,
    suffix: Annotated[str | None, typer.Option(help="FIM: code after the hole")] = None,
    repo_path: Annotated[str | None, typer.Option(
        metavar="PATH", help="FIM: the infilled file's path in its repository (StarCoder2's repository layout)")
    ] = None,
    repo_name: Annotated[str | None, typer.Option(
        metavar="NAME", help="FIM with --repo-path: the repository's name")] = None,
    repo_file: Annotated[list[str] | None, typer.Option(
        metavar="FILE", help="FIM with --repo-path: another file of the repository, put before it (repeatable)")
    ] = None,
    instruction: Annotated[str | None, typer.Option(help="answer an instruction through the run's template")] = None,
    input: Annotated[str | None, typer.Option(help="optional input for --instruction")] = None,
    template: Annotated[str | None, typer.Option(
        help="template name or YAML path (default: the run's data.template)")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate at most")] = 128,
    temperature: Annotated[float, typer.Option(help="sampling temperature; 0 = greedy")] = 0.2,
    top_p: Annotated[float, typer.Option(help="nucleus sampling")] = 0.95,
    stop: Annotated[list[str] | None, typer.Option(metavar="TEXT", help="stop at this text (repeatable)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for sampling")] = None,
    dtype: DtypeOption = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Complete, infill (FIM) or follow an instruction: sc2tune generate PATH --prompt ... | --prefix ...
    --suffix ... | --file F | --instruction ..."""
    from sc2tune.generation import RepoContext, Sampling, infill, instruct, load_for_inference, split_cursor
    from sc2tune.generation import generate as run_generate

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
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        stop=tuple(stop or ()), seed=seed)
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
        print(instruct(lm, instruction, input, template=template, sampling=sampling))
    elif infilling:
        print(infill(lm, prefix or "", suffix or "", sampling, repo=repo))
    else:
        assert prompt is not None
        print(run_generate(lm, prompt, sampling))


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


def classify(
    path: Annotated[str, typer.Argument(
        metavar="PATH", help="classifier folder (merged or model), adapter folder or run folder",
        show_default=False)],
    text: Annotated[list[str] | None, typer.Option(help="a text to classify (repeatable)")] = None,
    file: Annotated[str | None, typer.Option(help="texts to classify: one per line, or JSONL with a text field")
                    ] = None,
    column: Annotated[str, typer.Option(help="field holding the text in a JSONL --file")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object per text")] = False,
    dtype: DtypeOption = "auto",
    trust_remote_code: TrustRemoteCode = False,
) -> None:
    """Label texts with a classifier: sc2tune classify PATH --text ... | --file F."""
    from sc2tune.generation import classify as run_classify
    from sc2tune.generation import load_for_inference, read_texts

    if bool(text) == (file is not None):
        raise UserError("give --text (one or more) or --file, not both")
    items = list(text) if text else read_texts(file, column=column)  # type: ignore[arg-type]
    if not items:
        raise UserError(f"{file} holds no texts")
    for p in run_classify(load_for_inference(path, dtype=dtype, trust_remote_code=trust_remote_code), items):
        if as_json:
            print(json.dumps({"text": p.text, "label": p.label, "probabilities": p.probabilities}))
        else:
            probs = "  ".join(f"{name}={value:.3f}" for name, value in p.probabilities.items())
            print(f"{p.label}\t{probs}\t{p.text[:60]!r}")
