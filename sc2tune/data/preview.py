"""Rendering prepared data for a reader (what ``sc2tune data`` shows): examples with the trained part marked,
FIM examples in PSM and SPM first, and the statistics as a table.

A causal example is rendered as its decoded text, trained tokens (label != -100) styled green, or between
``⟦`` and ``⟧`` when plain; a packed row is split document by document (position ids restart at each
document). A classification example is rendered as its text and ``-> label``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from sc2tune.data.stats import DataStats
from sc2tune.tokens import special_tokens

if TYPE_CHECKING:  # a cache hit prints the statistics table without importing transformers or datasets
    from transformers import PreTrainedTokenizerBase

OPEN, CLOSE = "⟦", "⟧"


def _segments(row: dict[str, Any]) -> Iterator[tuple[list[int], list[int]]]:
    """(input_ids, labels) of each document in a row (one per row unless packed)."""
    ids, labels, positions = row["input_ids"], row["labels"], row.get("position_ids")
    starts = [i for i, p in enumerate(positions) if p == 0] if positions is not None else [0]
    for a, b in zip(starts, [*starts[1:], len(ids)], strict=False):  # no start (an empty row): nothing
        yield ids[a:b], labels[a:b]


def _runs(ids: list[int], labels: list[int]) -> Iterator[tuple[bool, list[int]]]:
    """Maximal runs of tokens that are all trained or all not."""
    from sc2tune.data.packing import IGNORE  # here: the statistics of a cache hit never import datasets

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


#: Documents looked at, at most, to find a PSM and an SPM example to show first.
FIM_SCAN = 2000


def fim_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int] | None:
    """Ids of ``<fim_prefix>`` and ``<fim_suffix>`` (None when the tokenizer lacks them)."""
    st = special_tokens(tokenizer, need_fim=False)
    return (st.fim_prefix, st.fim_suffix) if st.fim_prefix is not None and st.fim_suffix is not None else None


def fim_kind(ids: list[int], fim: tuple[int, int]) -> str:
    """How a FIM document is laid out: ``PSM`` (``<fim_prefix>`` then prefix text), ``SPM`` (``<fim_prefix>``
    directly followed by ``<fim_suffix>``) or ``plain`` (no FIM). In a repository row the first FIM'd file
    decides."""
    prefix, suffix = fim
    if prefix not in ids:
        return "plain"
    at = ids.index(prefix)
    return "SPM" if at + 1 < len(ids) and ids[at + 1] == suffix else "PSM"


def preview_order(dataset, classify: bool, fim: tuple[int, int] | None, show: int
                   ) -> Iterator[tuple[list[int], list[int] | int, str | None]]:
    """The first ``show`` documents as (ids, labels, kind). For FIM data a PSM and an SPM example come first
    when the first :data:`FIM_SCAN` documents hold them (labelled), then the others in order."""
    if show <= 0:
        return
    docs: list[tuple[list[int], list[int] | int]] = []
    for row in dataset:
        docs.extend([(row["input_ids"], row["labels"])] if classify else _segments(row))
        if len(docs) >= (FIM_SCAN if fim is not None else show):
            break
    if fim is None:
        for ids, labels in docs[:show]:
            yield ids, labels, None
        return
    kinds = [fim_kind(ids, fim) for ids, _ in docs]
    first = [kinds.index(k) for k in ("PSM", "SPM") if k in kinds]
    order = first + [i for i in range(len(docs)) if i not in first]
    for i in order[:show]:
        yield docs[i][0], docs[i][1], kinds[i]


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
