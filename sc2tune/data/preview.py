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
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text
from transformers import PreTrainedTokenizerBase

from sc2tune.data.packing import IGNORE
from sc2tune.data.stats import DataStats

OPEN, CLOSE = "⟦", "⟧"


def _segments(row: dict[str, Any]) -> Iterator[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each document in a row (one per row unless packed)."""
    ids, labels = row["input_ids"], row["labels"]
    positions = row.get("position_ids")
    if positions is None:
        yield ids, labels
        return
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
    for a, b in zip(starts, starts[1:], strict=False):
        yield ids[a:b], labels[a:b]


def _runs(ids: list[int], labels: list[int]) -> Iterator[tuple[bool, list[int]]]:
    """Maximal runs of tokens that are all trained or all not."""
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or (labels[i] != IGNORE) != (labels[start] != IGNORE):
            yield labels[start] != IGNORE, ids[start:i]
            start = i


def render_example(tokenizer: PreTrainedTokenizerBase, ids: list[int], labels: list[int] | int,
                   id2label: dict[int, str] | None = None, *, plain: bool) -> Text:
    """One example as rich Text (trained part styled green, or wrapped in ⟦ ⟧ when ``plain``)."""
    text = Text()
    decode = lambda t: tokenizer.decode(t, skip_special_tokens=False, clean_up_tokenization_spaces=False)  # noqa: E731
    if isinstance(labels, int):
        text.append(decode(ids))
        name = id2label.get(labels, str(labels)) if id2label else str(labels)
        text.append(f"  -> {name}", style="bold green")
        return text
    for trained, run in _runs(ids, labels):
        piece = decode(run)
        if plain:
            text.append(f"{OPEN}{piece}{CLOSE}" if trained else piece)
        else:
            text.append(piece, style="green" if trained else "dim")
    return text


def stats_table(stats: DataStats) -> Table:
    """The statistics as a two-column table."""
    table = Table(title=f"data: task {stats.task}, max_length {stats.max_length}, "
                  f"packing {'on' if stats.packing else 'off'}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    share = stats.trained_tokens / max(1, stats.tokens)
    rows: list[tuple[str, str]] = [
        ("examples", f"{stats.examples:,}"),
        ("sequences (before packing)", f"{stats.windows:,}"),
        ("rows", f"{stats.rows:,}"),
        ("tokens", f"{stats.tokens:,}"),
        ("trained tokens" if stats.task != "classify" else "labelled examples",
         f"{stats.trained_tokens:,}" + (f" ({share:.0%})" if stats.task != "classify" else "")),
        ("packing efficiency (tokens / rows x max_length)", f"{stats.packing_efficiency:.3f}"),
        ("truncated examples", f"{stats.truncated:,}"),
        ("dropped tokens", f"{stats.dropped_tokens:,}"),
        ("dropped examples", f"{stats.dropped_examples:,}"),
    ]
    if stats.task == "fim":
        rows.append(("FIM windows psm / spm / plain (fallback)",
                     f"{stats.fim['psm']} / {stats.fim['spm']} / {stats.fim['plain']} ({stats.fim['fallback']})"))
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(stats.skipped.items()))
        rows.append(("skipped files", f"{stats.skipped_files}" + (f" ({skipped})" if skipped else "")))
    if stats.class_counts is not None:
        rows.append(("classes (train)", ", ".join(f"{k} {v}" for k, v in stats.class_counts.items())))
    if stats.eval is not None:
        e = stats.eval
        rows.append(("eval: examples / rows / tokens", f"{e.examples:,} / {e.rows:,} / {e.tokens:,}"))
    for what, value in rows:
        table.add_row(what, value)
    return table


def run(recipe_path: str, overrides: list[str], *, show: int | None = None, as_json: bool = False,
        split: str = "train", prepare: bool = False) -> int:
    """Build the data of a recipe, preview ``show`` examples of ``split``, print the statistics.

    With ``prepare`` the rows are written to (or found in) ``data.cache_dir`` for later runs, nothing is
    previewed unless ``show`` asks, and the prepared folder is named."""
    from sc2tune.data import build_datasets
    from sc2tune.errors import UserError
    from sc2tune.modeling import load_tokenizer
    from sc2tune.recipe import load_recipe

    recipe = load_recipe(recipe_path, overrides)
    if prepare and recipe.data.cache_dir is None:
        raise UserError("--prepare writes to data.cache_dir, which is null",
                        hint="leave data.cache_dir at auto or give a folder (data.cache_dir=PATH)")
    tokenizer = load_tokenizer(recipe.model)
    bundle = build_datasets(recipe, tokenizer, show_progress=sys.stderr.isatty())
    dataset = bundle.train if split == "train" else bundle.eval
    if dataset is None:
        raise UserError("there is no eval split (data.eval is null)", hint="use --split train")
    if prepare:
        print(f"prepared data: {bundle.prepared}", file=sys.stderr if as_json else sys.stdout)
    show = (0 if as_json or prepare else 3) if show is None else show
    plain = as_json or not sys.stdout.isatty()
    console = Console(soft_wrap=True, highlight=False, no_color=plain, emoji=False, markup=False)
    shown = 0
    for row in dataset:
        if shown >= show:
            break
        pieces = [(row["input_ids"], row["labels"])] if bundle.id2label is not None else _segments(row)
        for ids, labels in pieces:
            if shown >= show:
                break
            shown += 1
            console.rule(f"{split} example {shown} ({len(ids)} tokens)", style="cyan")
            console.print(render_example(tokenizer, ids, labels, bundle.id2label, plain=plain))
    if as_json:
        sys.stdout.flush()
        print(json.dumps(bundle.stats.to_dict()))
    else:
        if shown and plain and bundle.id2label is None:
            print(f"\n(trained tokens are shown between {OPEN} and {CLOSE})")
        console.print(stats_table(bundle.stats))
    return 0
