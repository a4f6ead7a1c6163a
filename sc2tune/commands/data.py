"""``sc2tune data RECIPE``: build the recipe's data, show rendered examples with the trained part marked,
and print the statistics.

A causal example is shown as its decoded text, trained tokens (label != -100) in green on a terminal or
between ``⟦`` and ``⟧`` in plain output; a packed row is shown document by document (position ids restart
at each document). A classification example is shown as its text and ``-> label``. With ``--json`` the
last line of stdout is one JSON object: the statistics (:meth:`DataStats.to_dict`).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from sc2tune.commands.options import Overrides, RecipePath, TrustRemoteCode, load
from sc2tune.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

    from sc2tune.data.stats import DataStats


def data(
    recipe: RecipePath,
    overrides: Overrides = None,
    trust_remote_code: TrustRemoteCode = False,
    show: Annotated[int | None, typer.Option(
        metavar="N", min=0, help="preview N rendered examples, trained part marked (default 3; 0 with --json)")
    ] = None,
    split: Annotated[Literal["train", "eval"], typer.Option(help="which split to preview")] = "train",
    as_json: Annotated[bool, typer.Option(
        "--json", help="print the statistics as one JSON object (last line)")] = False,
    prepare: Annotated[bool, typer.Option(
        "--prepare", help="build the prepared data into data.cache_dir ahead of training (a hit if it is there "
        "already); no preview unless --show")] = False,
) -> None:
    """Preview a recipe's data and its statistics: sc2tune data RECIPE [key=value ...] [--show N] [--json]
    [--prepare]."""
    from rich.console import Console

    loaded = load(recipe, overrides, trust_remote_code)
    plain = as_json or not sys.stdout.isatty()
    console = Console(soft_wrap=True, highlight=False, no_color=plain, emoji=False, markup=False)
    if prepare and not show:  # a cache hit is answered from its meta.json: no tokenizer, torch or transformers
        from sc2tune.data.lookup import lookup_prepared

        found = lookup_prepared(loaded)
        if found is not None and (split == "train" or found.stats.eval is not None):
            print(f"prepared data: {found.folder}", file=sys.stderr if as_json else sys.stdout)
            print_stats(found.stats, as_json=as_json, console=console)
            return
    if prepare and loaded.data.cache_dir is None:
        raise UserError("--prepare writes to data.cache_dir, which is null",
                        hint="leave data.cache_dir at auto or give a folder (data.cache_dir=PATH)")
    from sc2tune.data import build_datasets
    from sc2tune.data.preview import CLOSE, OPEN, fim_tokens, preview_order, render_example
    from sc2tune.modeling import ModelSource, load_tokenizer

    tokenizer = load_tokenizer(ModelSource.from_recipe(loaded))
    bundle = build_datasets(loaded, tokenizer, show_progress=sys.stderr.isatty())
    dataset = bundle.train if split == "train" else bundle.eval
    if dataset is None:
        raise UserError("there is no eval split (data.eval is null)", hint="use --split train")
    if prepare:
        print(f"prepared data: {bundle.prepared}", file=sys.stderr if as_json else sys.stdout)
    show = (0 if as_json or prepare else 3) if show is None else show
    shown = 0
    fim = fim_tokens(tokenizer) if loaded.task == "fim" else None
    for ids, labels, kind in preview_order(dataset, bundle.id2label is not None, fim, show):
        shown += 1
        what = f", {kind}" if kind else ""
        console.rule(f"{split} example {shown} ({len(ids)} tokens{what})", style="cyan")
        console.print(render_example(tokenizer, ids, labels, bundle.id2label, plain=plain))
    if shown and plain and not as_json and bundle.id2label is None:
        print(f"\n(trained tokens are shown between {OPEN} and {CLOSE})")
    print_stats(bundle.stats, as_json=as_json, console=console)


def print_stats(stats: DataStats, *, as_json: bool, console: Console) -> None:
    """The statistics: one JSON object on the last stdout line with ``as_json``, else a table."""
    if as_json:
        sys.stdout.flush()
        print(json.dumps(stats.to_dict()))
        return
    from sc2tune.data.preview import stats_table

    console.print(stats_table(stats))
