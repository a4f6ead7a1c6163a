"""The ``sc2tune`` command line: the app assembled from :data:`sc2tune.commands.COMMANDS`, and :func:`main`.

Each command's options come from its API function's signature (:mod:`sc2tune.commands`); this module adds
``-v/--verbose``, builds a command only when it runs (:class:`CommandTable`), and maps the exits: a
:class:`~sc2tune.errors.UserError` is printed as ``sc2tune COMMAND: error: MESSAGE`` on stderr without a
traceback and exits with its ``exit_code``; a usage error (unknown option or command, a value
of the wrong type) prints the usage and exits 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from typing import Annotated, Any

import typer
from typer import _click as click  # typer vendors click (8.3)
from typer._click.exceptions import UsageError
from typer.core import TyperCommand, TyperGroup

from sc2tune.commands import COMMANDS
from sc2tune.commands.derive import Command
from sc2tune.errors import UserError


def _quiet_third_parties() -> None:
    """Keep sc2tune's own messages and progress bars; send the libraries' chatter to the debug log (-v).

    Python warnings (transformers' and torch's deprecation notices) go through logging as ``py.warnings``
    and show only with -v; transformers and datasets speak only on errors and draw no bars of their own
    ("Loading weights", per-split map bars); bitsandbytes' note about an optional CPU kernel package is
    dropped. The settings are process defaults the user can still override in the environment.
    """
    for name, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("DATASETS_VERBOSITY", "error")):
        os.environ.setdefault(name, value)
    logging.captureWarnings(True)
    for name in ("py.warnings", "bitsandbytes", "transformers", "datasets", "peft", "accelerate", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # already imported (the API used before the CLI): tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def _setup(verbose: Annotated[bool, typer.Option("-v", "--verbose", help="debug logging")] = False) -> None:
    """Fine-tune StarCoder2 with LoRA/QLoRA: instruction, FIM, classification."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        _quiet_third_parties()


class CommandTable(TyperGroup):
    """The commands of :data:`~sc2tune.commands.COMMANDS`: listed by name and help, each built only when it runs
    or shows its help (its API module may import torch). A route word picks another command (``eval code``),
    and an option of that other command given to this one is a usage error naming it."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        for name, command in COMMANDS.items():
            self.add_command(TyperCommand(name, help=command.help))  # listed only: built on use

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                             list[str]]:
        if not args or args[0] not in COMMANDS:
            return super().resolve_command(ctx, args)
        name, command, rest = args[0], COMMANDS[args[0]], args[1:]
        variants = {name: command, **{f"{name} {word}": routed for word, routed in command.routes.items()}}
        built = {key: click_command(key, variant) for key, variant in variants.items()}
        at = _first_argument(rest, built.values())
        if at is not None and rest[at] in command.routes:  # the route word may follow options (eval --json code)
            name, rest = f"{name} {rest[at]}", rest[:at] + rest[at + 1:]
        flags = {key: {opt for param in cmd.params for opt in param.opts} for key, cmd in built.items()}
        for flag in (arg.split("=", 1)[0] for arg in rest if arg.startswith("--") and arg != "--"):
            if flag not in flags[name] and (other := next((k for k in built if flag in flags[k]), None)):
                raise UsageError(f"{flag} is an option of 'sc2tune {_label(other, built[other])}', not of "
                                 f"'sc2tune {_label(name, built[name])}'", ctx)
        return name, built[name], rest


def _first_argument(args: list[str], commands: Iterable[click.Command]) -> int | None:
    """Index in ``args`` of the first positional argument: options are skipped, with their value when they take
    one (``--out DIR``; not ``--out=DIR``, a flag or an option none of ``commands`` knows); after ``--`` the next
    word is positional. None when there is none."""
    takes_value = {opt: not (getattr(param, "is_flag", False) or getattr(param, "count", False))
                   for cmd in commands for param in cmd.params if param.param_type_name == "option"
                   for opt in param.opts}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return i + 1 if i + 1 < len(args) else None
        if not arg.startswith("-") or arg == "-":
            return i
        i += 2 if "=" not in arg and takes_value.get(arg, False) else 1
    return None


def _label(name: str, command: click.Command) -> str:
    """``eval RECIPE_OR_RUN``: the name and the first argument's metavar (what tells the variants apart)."""
    first = next((p for p in command.params if p.param_type_name == "argument"), None)
    return f"{name} {first.metavar or first.name.upper()}" if first is not None else name


def click_command(name: str, command: Command) -> click.Command:
    info = typer.models.CommandInfo(name=name, callback=command.function())
    return typer.main.get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode="markdown")


def build_app() -> typer.Typer:
    """The typer app: ``-v/--verbose``, then the commands of :data:`~sc2tune.commands.COMMANDS` (a
    :class:`CommandTable`).

    Help is rendered by rich in markdown mode (option groups as panels, ``[...]`` shown as written): write
    ``<tag>``-like words in help texts as markdown code (backticks), or markdown drops them as HTML."""
    app = typer.Typer(name="sc2tune", cls=CommandTable, add_completion=False, no_args_is_help=True,
                      rich_markup_mode="markdown", pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_setup)
    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sc2tune`` console script and ``python -m sc2tune``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = typer.main.get_command(build_app())
    try:
        with command.make_context("sc2tune", argv) as context:
            command.invoke(context)
    except typer.Exit as done:  # --help, or a command's own status (a preempted train: 143)
        return done.exit_code
    except UserError as err:
        command_name = next((arg for arg in argv if not arg.startswith("-")), "")  # the first non-option word
        print(f"sc2tune {command_name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as err:  # a usage error (click's, vendored by typer): the usage and the problem
        show = getattr(err, "show", None)
        if show is not None:
            show()
        else:
            print(f"sc2tune: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
