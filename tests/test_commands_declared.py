"""Commands declared once: each command's options are exactly its API function's parameters.

The expected names are read here off the API function with ``inspect`` (each annotation evaluated in the API's
own module; a ``Help`` in it makes an option, a ``Recipe`` makes RECIPE, its overrides and
``--trust-remote-code``) plus the printing options of ``show``; the actual ones are the parameters of the click
command the CLI runs. The flag rules of :mod:`sc2tune.clihelp` are checked on a toy API through the command line.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Annotated

import pytest

from sc2tune.cli import click_command
from sc2tune.clihelp import Help
from sc2tune.commands import COMMANDS, Command
from sc2tune.recipe import Recipe

VARIANTS = {**{name: c for name, c in COMMANDS.items()},
            **{f"{name} {word}": r for name, c in COMMANDS.items() for word, r in c.routes.items()}}
#: Commands that are their own declaration (no API function with the same parameters exists).
OWN = {"validate", "schema", "data"}


def _expected(command: Command) -> set[str]:
    api = command.api_function()
    module = vars(sys.modules[inspect.unwrap(api).__module__])
    names = set()
    for name, param in inspect.signature(api).parameters.items():
        kind = eval(param.annotation, module) if isinstance(param.annotation, str) else param.annotation  # noqa: S307
        if kind is Recipe:
            names |= {"recipe", "overrides", "trust_remote_code"}
        elif command.api is None or any(isinstance(m, Help) for m in getattr(kind, "__metadata__", ())):
            names.add(name)
        else:  # not an option: the command must be able to leave it out
            assert param.default is not inspect.Parameter.empty, name
    if command.api is not None:  # printing options: only --json (an API parameter restated here would be a 2nd list)
        printing = set(list(inspect.signature(command.show).parameters)[1:])
        assert printing <= {"as_json"}, printing
        names |= printing
    return names


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_the_options_are_exactly_the_api_functions_parameters(name: str):
    command = VARIANTS[name]
    assert (command.api is None) == (name in OWN), "a command with an API function takes its options from it"
    options = {param.name for param in click_command(name, command).params} - {"help"}
    assert options == _expected(command)


def test_eval_run_and_eval_code_have_their_own_options():
    run, code = (_expected(VARIANTS[n]) for n in ("eval", "eval code"))
    assert {"max_examples", "infill_examples"} <= run - code and {"samples", "k", "problems"} <= code - run


@pytest.mark.parametrize("args, message", [
    (["eval", "RUN", "--samples", "s.jsonl"], "--samples is an option of 'sc2tune eval code', not of 'sc2tune eval "
                                              "RECIPE_OR_RUN'"),
    (["eval", "code", "--max-examples=3"], "--max-examples is an option of 'sc2tune eval RECIPE_OR_RUN', not of "
                                           "'sc2tune eval code'"),
])
def test_an_option_of_the_other_eval_is_a_usage_error_naming_it(args: list[str], message: str, run_cli):
    result = run_cli(*args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("before", [["--json"], ["--timeout", "5"], ["--samples=S.jsonl", "--json"]])
def test_the_route_word_after_options_picks_eval_code(before: list[str], run_cli, tmp_path: Path):
    missing = tmp_path / "p.jsonl"
    result = run_cli("eval", *before, "code", "--problems", str(missing), "--samples", str(tmp_path / "s.jsonl"))
    # eval code ran (and refused the missing problems file); eval RUN would have refused --problems as a usage error
    assert result.returncode == 1, result.stderr
    assert f"--problems '{missing}': file not found" in result.stderr and "Traceback" not in result.stderr


def test_an_option_value_that_reads_like_the_route_word_is_not_it(run_cli, tmp_path: Path):
    run = tmp_path / "RUN"
    result = run_cli("eval", "--out", "code", str(run))  # --out takes "code": RUN is the first argument
    assert result.returncode == 1 and f"{run}: no such run folder or recipe file" in result.stderr, result.stderr


seen: dict[str, object] = {}


def toy(
    where: Annotated[str | Path, Help("folder", positional=True)],
    *,
    out: Annotated[str, Help("target", flag="--out")],
    verify: Annotated[bool, Help("skip the check", flag="--no-verify")] = True,
    qlora: Annotated[bool | None, Help("force QLoRA", flag="--qlora")] = None,
    size: Annotated[str | int, Help("a size")] = "2GB",
    quiet: bool = False,
) -> dict[str, object]:
    seen.update(where=where, out=out, verify=verify, qlora=qlora, size=size, quiet=quiet)
    return seen


def toy_show(result: dict[str, object]) -> None:
    """Toy."""


@pytest.mark.parametrize("args, values", [
    (["W", "--out", "O"], {"verify": True, "qlora": None, "size": "2GB"}),
    (["W", "--out", "O", "--no-verify", "--qlora", "--size", "500MB"], {"verify": False, "qlora": True,
                                                                       "size": "500MB"}),
])
def test_flags_give_the_value_other_than_the_default(args: list[str], values: dict[str, object]):
    import typer.main

    command = Command(toy_show, api=f"{__name__}:toy")
    click = typer.main.get_command_from_info(typer.models.CommandInfo(name="toy", callback=command.function()),
                                             pretty_exceptions_short=True, rich_markup_mode=None)
    seen.clear()
    click.main(args, standalone_mode=False)
    assert seen == {"where": "W", "out": "O", "quiet": False, **values}
    assert {p.name for p in click.params} == {"where", "out", "verify", "qlora", "size"}  # not quiet
