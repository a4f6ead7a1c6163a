"""The command layer: one typed function per ``sc2tune`` command, its signature the command's options.

Each function takes its options as ``Annotated[..., typer.Option(help=...)]`` / ``typer.Argument``
parameters (the docstring is the command's help), turns them into the API's typed objects (a ``Recipe``
through ``load_recipe(path, overrides)``, ``generation.Sampling``, ``evaluation.sandbox.SandboxLimits``),
calls the Python API and prints the result. A :class:`~sc2tune.errors.UserError` propagates to
:func:`sc2tune.cli.main`, which prints it. Nothing heavy is imported at module level (no torch,
transformers, datasets, peft): the API is imported inside the command bodies, so ``sc2tune --help`` and
``sc2tune schema`` stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sc2tune.commands.data import data
from sc2tune.commands.evaluate import evaluate
from sc2tune.commands.inference import classify, generate
from sc2tune.commands.plan import plan
from sc2tune.commands.setup import quickstart, schema, tiny_model, validate
from sc2tune.commands.training import PREEMPTED_EXIT, merge, train

#: Command name -> its function, in the order ``sc2tune --help`` lists them.
COMMANDS: dict[str, Callable[..., Any]] = {
    "quickstart": quickstart,
    "validate": validate,
    "train": train,
    "schema": schema,
    "tiny-model": tiny_model,
    "eval": evaluate,
    "merge": merge,
    "generate": generate,
    "classify": classify,
    "plan": plan,
    "data": data,
}

__all__ = ["COMMANDS", "PREEMPTED_EXIT"]
