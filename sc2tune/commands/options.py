"""Options several commands share, as ``Annotated`` types: the type is the parsed value, the help is the text.

Overrides are ``key.sub=value`` strings typed as YAML (``train.lr=1e-4``, ``data.eval=null``); they may come
before or after options (``sc2tune train R --resume train.lr=1e-4``). ``--trust-remote-code`` is the command
line's explicit say: it becomes the override ``model.trust_remote_code=true``, which a recipe alone cannot set.
Nothing heavy is imported here: the command layer loads in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from sc2tune.clihelp import REMOTE_CODE_HELP

if TYPE_CHECKING:
    from sc2tune.recipe import Recipe

RecipePath = Annotated[str, typer.Argument(metavar="RECIPE", help="path to a recipe YAML file", show_default=False)]
Overrides = Annotated[list[str] | None, typer.Argument(
    metavar="KEY.SUB=VALUE", show_default=False,
    help="override recipe keys, values typed as YAML (train.lr=1e-4, data.eval=null); before or after options")]
TrustRemoteCode = Annotated[bool, typer.Option("--trust-remote-code", help=REMOTE_CODE_HELP)]
JsonOutput = Annotated[bool, typer.Option("--json", help="print a JSON summary as the last stdout line")]

def load(recipe: str, overrides: list[str] | None, trust_remote_code: bool) -> Recipe:
    """The validated recipe of ``recipe`` + ``overrides``, plus ``model.trust_remote_code=true`` last when
    ``--trust-remote-code`` was given."""
    from sc2tune.recipe import REMOTE_CODE_OVERRIDE, load_recipe

    return load_recipe(recipe, [*(overrides or ()), *([REMOTE_CODE_OVERRIDE] if trust_remote_code else [])])
