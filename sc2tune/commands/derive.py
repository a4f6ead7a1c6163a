"""A command built from its API function (see :mod:`sc2tune.commands` for the design).

The typer function of ``Command(show, api="module:function")`` has one option or argument per ``Help``-annotated
parameter of ``function`` (``Recipe``: the three of :data:`RECIPE_OPTIONS`), then ``show``'s printing options;
it calls ``function`` with the values given (plus ``pass_on(printing)``) and ``show(result, **printing)``.
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
RECIPE_OPTIONS = {"recipe": (RecipePath, inspect.Parameter.empty), "overrides": (Overrides, None),
                  "trust_remote_code": (TrustRemoteCode, False)}
_KW = inspect.Parameter.KEYWORD_ONLY


@dataclass(frozen=True)
class Command:
    """A command: ``show`` prints what ``api`` returns (``api`` None: ``show`` is a typer function, its own
    declaration); ``pass_on`` gives API arguments from the printing options; ``routes``: a word after the name
    that picks another command (``eval code``). The help is ``show``'s docstring."""

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
        """The typer function: its signature holds the options."""
        return self.show if self.api is None else derive(self.api_function(), self.show, self.pass_on)


def parameter_types(function: Callable[..., Any], skip: int = 0) -> dict[str, Any]:
    """Each parameter's annotation (after the first ``skip``), evaluated in the function's module; the return
    annotation is left alone (it may name a ``TYPE_CHECKING`` import)."""
    inner = inspect.unwrap(function)
    names = list(inspect.signature(function).parameters)[skip:]
    holder = types.SimpleNamespace(__annotations__={n: inner.__annotations__.get(n, Any) for n in names})
    return typing.get_type_hints(holder, globalns=inner.__globals__, include_extras=True)


def option(name: str, kind: Any, help_: Help, default: Any) -> tuple[inspect.Parameter, Callable[[Any], Any]]:
    """The typer parameter of one API parameter, and how its parsed value goes back to the API: a bool (or
    ``bool | None``) is a flag that passes the value other than the default (True for None); a union with
    ``str`` (``str | Path``) is read as ``str``."""
    args, api_default = typing.get_args(kind), default
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and str in args:
        kind = str | None if type(None) in args else str
    back: Callable[[Any], Any] = lambda value: value  # noqa: E731
    if kind in (bool, bool | None):
        flip = default is not True
        back, kind, default = (lambda given: flip if given else api_default), bool, False  # noqa: E731
    if help_.positional:
        info: Any = typer.Argument(metavar=help_.metavar or name.upper(), help=help_.text, show_default=False)
    else:
        info = typer.Option(help_.flag or f"--{name.replace('_', '-')}", help=help_.text, metavar=help_.metavar,
                            min=help_.min, rich_help_panel=help_.panel)
    return inspect.Parameter(name, _KW, annotation=Annotated[kind, info], default=default), back


def derive(api: Callable[..., Any], show: Callable[..., None],
           pass_on: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Callable[..., None]:
    """The typer function of ``api`` and ``show`` (see the module docstring)."""
    from sc2tune.recipe import Recipe

    params, backs, recipe_param = [], {}, None
    for p, kind in zip(inspect.signature(api).parameters.values(), parameter_types(api).values(), strict=True):
        if kind is Recipe:
            recipe_param = p.name
            params += [inspect.Parameter(n, _KW, annotation=a, default=d) for n, (a, d) in RECIPE_OPTIONS.items()]
        elif typing.get_origin(kind) is Annotated:
            help_ = next((m for m in kind.__metadata__ if isinstance(m, Help)), None)
            if help_ is not None:  # a parameter without Help is no option
                param, backs[p.name] = option(p.name, typing.get_args(kind)[0], help_, p.default)
                params.append(param)
    printing = parameter_types(show, skip=1)
    params += [p.replace(kind=_KW, annotation=printing[p.name])
               for p in list(inspect.signature(show).parameters.values())[1:]]

    def command(**given: Any) -> None:
        shown = {name: given.pop(name) for name in printing}
        if recipe_param is not None:
            given[recipe_param] = load(given.pop("recipe"), given.pop("overrides"), given.pop("trust_remote_code"))
        arguments = {name: backs[name](value) if name in backs else value for name, value in given.items()}
        show(api(**arguments, **(pass_on(shown) if pass_on else {})), **shown)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__, command.__name__ = show.__doc__, api.__name__
    return command
