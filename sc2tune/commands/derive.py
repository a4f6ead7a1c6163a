"""A command built from its API function: the API's typed parameters are the options, ``show`` prints the result.

``Command(show, api="module:function")`` reads ``function``'s signature (each parameter ``Annotated[T,
Help(...)]``, :mod:`sc2tune.clihelp`) and makes one typer option or argument of each, followed by ``show``'s own
keyword parameters (how to print: ``--json``); a parameter typed :class:`~sc2tune.recipe.Recipe` is read as
``RECIPE [KEY.SUB=VALUE ...] [--trust-remote-code]`` and loaded by ``load_recipe``. Running the command calls
``function`` with the values given and then ``show(result, **printing)``; ``pass_on`` may set API parameters
that are not options from the printing ones (no progress bars with ``--json``). ``Command(function)`` with no
``api`` is a command whose typer-annotated signature is its own single declaration (``validate``, ``plan``).
The help is ``show``'s docstring. The API module is imported only when its command runs or shows its help:
merging, generation and training import torch.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from sc2tune.clihelp import Help
from sc2tune.commands.options import Overrides, RecipePath, TrustRemoteCode, load

#: How a ``Recipe`` parameter is read: the recipe file, its overrides and the command line's remote-code say.
RECIPE_OPTIONS = {"recipe": RecipePath, "overrides": Overrides, "trust_remote_code": TrustRemoteCode}
_KW = inspect.Parameter.KEYWORD_ONLY


@dataclass(frozen=True)
class Command:
    """One ``sc2tune`` command (see the module docstring); ``routes``: a word after the name that picks another
    command (``eval code``)."""

    show: Callable[..., None]
    api: str | None = None
    pass_on: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    routes: Mapping[str, Command] = field(default_factory=dict)

    @property
    def help(self) -> str:
        return inspect.getdoc(self.show) or ""

    def api_function(self) -> Callable[..., Any]:
        """The function whose parameters are the options (imported now: it may import torch)."""
        if self.api is None:
            return self.show
        module, name = self.api.split(":")
        return getattr(importlib.import_module(module), name)

    def function(self) -> Callable[..., None]:
        """The command's typer function: its signature holds the options."""
        return self.show if self.api is None else derive(self.api_function(), self.show, self.pass_on)


def parameter_types(function: Callable[..., Any], skip: int = 0) -> dict[str, Any]:
    """Each parameter's annotation (after the first ``skip``), evaluated where the function is defined; the
    return annotation is left alone (it may name a ``TYPE_CHECKING`` import)."""
    inner = inspect.unwrap(function)
    names = list(inspect.signature(function).parameters)[skip:]
    holder = types.SimpleNamespace(__annotations__={n: inner.__annotations__.get(n, Any) for n in names})
    return typing.get_type_hints(holder, globalns=inner.__globals__, include_extras=True)


def is_recipe(kind: Any) -> bool:
    from sc2tune.recipe import Recipe

    return kind is Recipe


def split_help(name: str, kind: Any) -> tuple[Any, Help | None]:
    """``Annotated[T, Help(...)]`` -> (T, the Help); a parameter without one is no option."""
    if typing.get_origin(kind) is not Annotated:
        return kind, None
    base, *meta = typing.get_args(kind)
    return base, next((m for m in meta if isinstance(m, Help)), None)


def _cli_type(kind: Any) -> Any:
    """``str | Path`` and ``str | int`` are read as ``str`` (``| None`` kept); other types as they are."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and str in args:
        return str | None if type(None) in args else str
    return kind


def option(name: str, kind: Any, help_: Help, default: Any) -> tuple[inspect.Parameter, Callable[[Any], Any]]:
    """The typer parameter of one API parameter and how its parsed value goes back to the API.

    A bool (or ``bool | None``) is a flag that, given, passes the value other than the default (True when the
    default is None)."""
    kind, api_default = _cli_type(kind), default

    def back(value: Any) -> Any:
        return value

    if kind in (bool, bool | None):
        flip = default is not True

        def back(value: Any) -> Any:
            return flip if value else api_default

        kind, default = bool, False
    if help_.positional:
        info: Any = typer.Argument(metavar=help_.metavar or name.upper(), help=help_.text, show_default=False)
    else:
        info = typer.Option(help_.flag or f"--{name.replace('_', '-')}", help=help_.text, metavar=help_.metavar,
                            min=help_.min, rich_help_panel=help_.panel)
    return inspect.Parameter(name, _KW, annotation=Annotated[kind, info], default=default), back


def derive(api: Callable[..., Any], show: Callable[..., None],
           pass_on: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Callable[..., None]:
    """The typer function of ``api`` + ``show`` (see the module docstring)."""
    params: list[inspect.Parameter] = []
    backs: dict[str, Callable[[Any], Any]] = {}
    recipe_param = None
    for p, kind in zip(inspect.signature(api).parameters.values(), parameter_types(api).values(), strict=True):
        if is_recipe(kind):
            recipe_param = p.name
            params += [inspect.Parameter(n, _KW, annotation=a, default=inspect.Parameter.empty if n == "recipe"
                                         else None if n == "overrides" else False) for n, a in RECIPE_OPTIONS.items()]
            continue
        base, help_ = split_help(p.name, kind)
        if help_ is not None:
            param, backs[p.name] = option(p.name, base, help_, p.default)
            params.append(param)
    printing = parameter_types(show, skip=1)
    params += [p.replace(kind=_KW, annotation=printing[p.name])
               for p in list(inspect.signature(show).parameters.values())[1:]]

    def command(**given: Any) -> None:
        shown = {name: given.pop(name) for name in printing}
        if recipe_param is not None:
            loaded = load(given.pop("recipe"), given.pop("overrides"), given.pop("trust_remote_code"))
            given[recipe_param] = loaded
        arguments = {name: backs[name](value) if name in backs else value for name, value in given.items()}
        show(api(**arguments, **(pass_on(shown) if pass_on else {})), **shown)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = inspect.getdoc(show)
    command.__name__ = command.__qualname__ = getattr(api, "__name__", "command")
    return command
