"""The command layer: each ``sc2tune`` command is the typed API function it runs, declared once.

A command is a :class:`~sc2tune.commands.derive.Command`: the API function (``api="module:function"``) whose
typed parameters, each ``Annotated[T, Help("text")]`` (:mod:`sc2tune.clihelp`), are the command's options, and
``show``, which prints the result (its docstring is the command's help; its own keyword parameters, such as
``--json``, are printing options). A parameter typed ``Recipe`` is read as ``RECIPE [KEY.SUB=VALUE ...]
[--trust-remote-code]`` (``load_recipe(path, overrides)``). So ``sc2tune merge`` has exactly the parameters of
:func:`sc2tune.merging.merge`, and no second list of them exists (``tests/test_cli.py`` checks this for every
command). ``eval`` is two commands: ``eval RUN`` (:func:`sc2tune.evaluation.api.eval_run`) and ``eval code``
(:func:`~sc2tune.evaluation.api.eval_code`), the word ``code`` picking the second (``Command.routes``). A command
with no API function of its own (``validate``, ``schema``, ``data``) is a typer function whose
signature is its one declaration.

A :class:`~sc2tune.errors.UserError` propagates to :func:`sc2tune.cli.main`, which prints it. Nothing heavy is
imported here: an API module (merging and generation import torch) is imported only when its command runs or
shows its help, so ``sc2tune --help``, ``validate``, ``plan`` and ``schema`` stay fast (and free of torch).
"""

from __future__ import annotations

from sc2tune.commands.data import data
from sc2tune.commands.derive import Command
from sc2tune.commands.evaluate import evaluate
from sc2tune.commands.export import export
from sc2tune.commands.inference import classify, generate
from sc2tune.commands.plan import plan
from sc2tune.commands.serving import serve
from sc2tune.commands.setup import quickstart, schema, tiny_model, validate
from sc2tune.commands.training import PREEMPTED_EXIT, merge, train

#: Command name -> the command, in the order ``sc2tune --help`` lists them.
COMMANDS: dict[str, Command] = {
    "quickstart": quickstart,
    "validate": Command(validate),
    "train": train,
    "schema": Command(schema),
    "tiny-model": tiny_model,
    "eval": evaluate,
    "merge": merge,
    "export": export,
    "generate": generate,
    "classify": classify,
    "serve": serve,
    "plan": plan,
    "data": Command(data),
}

__all__ = ["COMMANDS", "PREEMPTED_EXIT", "Command"]
