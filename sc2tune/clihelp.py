"""How an API parameter shows on the command line: ``Annotated[T, Help("text")]`` in the API's signature.

The typed signature of an API function (``merge``, ``train``, ``quickstart``, ...) is the one declaration of
its command's options: :mod:`sc2tune.commands` makes each ``Help``-annotated parameter an option named
``--name-with-dashes`` (or ``flag``), or a positional argument (``positional=True``), with ``text`` as its help.
A bool is a flag that gives the value other than the default: ``verify: Annotated[bool, Help("skip ...",
flag="--no-verify")] = True`` is passed ``verify=False`` when ``--no-verify`` is given; a ``bool | None``
defaulting to None is passed True. A ``str | Path`` (or ``str | int``) parameter is read as a string. Nothing
here imports typer: the layers below the commands only describe their parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated


@dataclass(frozen=True)
class Help:
    """The command-line face of one API parameter (the help text is markdown: write ``<tag>`` as code)."""

    text: str
    flag: str | None = None  # the option's name when it is not --name-with-dashes (--out, --no-verify)
    metavar: str | None = None
    min: int | float | None = None
    panel: str | None = None  # the help panel it is listed in
    positional: bool = False

#: The help of every ``trust_remote_code`` parameter (``--trust-remote-code``).
REMOTE_CODE_HELP = ("allow the base model's own Python code (hub models with auto_map); a recipe or run folder "
                    "cannot turn this on by itself")
TrustRemoteCode = Annotated[bool, Help(REMOTE_CODE_HELP, flag="--trust-remote-code")]
