"""Tasks instruct and classify in bounded memory: records -> tokens -> (packed) rows -> Arrow, a chunk at a time.

1. *Split.* ``data.eval`` as a fraction holds out records: :func:`~sc2tune.data.split.split_fraction`
   over the record count, which a first pass over the sources counts (classify: the same pass collects
   each record's label as a small integer code; id2label comes from the training records' label names,
   :func:`~sc2tune.data.classification.label_ids_of`, and an eval label training never saw is an error
   naming the record).
2. *Encode.* Each split is read again, :data:`~sc2tune.data.sources.CHUNK_RECORDS` records at a time
   (:func:`~sc2tune.data.sources.iter_records`: the same checks and ``file:line`` errors), the held-out
   records of the other split left out. ``data.num_proc`` workers template + tokenize (instruct,
   :func:`~sc2tune.data.instruct.tokenize_instruct`) or encode (classify,
   :func:`~sc2tune.data.classification.tokenize_classify`) the chunks; at most two chunks per worker are
   in flight, and results come back in chunk order.
3. *Rows.* Unpacked rows are written as they come. With ``data.packing`` the sequences of whole chunks
   gather in a buffer of at most :data:`PACK_TOKENS` tokens, packed best-fit
   (:func:`~sc2tune.data.packing.pack`) before the next chunk would overflow it:
   pack buffer ``c`` of a split uses seed ``chunked.chunk_seed(train.seed, c)`` (buffer 0: the seed itself).
   Rows go to ``SPLIT/00000.arrow`` through one Arrow writer per split.

Chunks and pack buffers are cut by the data alone, never by ``data.num_proc``: the rows are the same for
any number of workers (more than one pack buffer: the same sequences and counts as one, packed within each
buffer). Memory holds one chunk of records
per worker in flight, one pack buffer, and one int32 label code per record (classify); it does not grow
with the number of records otherwise.
"""

from __future__ import annotations

import logging
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from sc2tune.data.chunked import chunk_seed
from sc2tune.data.classification import label_ids_of, label_name, tokenize_classify, unseen_labels_error
from sc2tune.data.instruct import tokenize_instruct
from sc2tune.data.packing import TokenSeqs, pack, unpacked
from sc2tune.data.progress import Progress, quiet_datasets
from sc2tune.data.sources import Records, iter_records
from sc2tune.data.split import split_fraction
from sc2tune.data.stats import DataStats, SplitStats
from sc2tune.data.store import arrow_writer
from sc2tune.data.templates import load_template
from sc2tune.data.workers import job, workers
from sc2tune.errors import RecipeError
from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)

#: Tokens gathered, at most, before they are packed (best fit within this many: ~8 MB of int32 ids and
#: labels, ~500 rows of 2048; a chunk of more tokens is packed alone).
PACK_TOKENS = 2**20

Load = Callable[[str | list[str], str], Iterator[Records]]


def _encode(records: Records) -> tuple[tuple[Any, ...], int]:
    """One chunk of records through the job's encoder (instruct: sequences and counts; classify: rows, counts and
    examples per label name), and the number of records."""
    return job()(records), len(records)


def _select(parts: Iterable[Records], keep: np.ndarray | None) -> Iterator[Records]:
    """The records whose running index is marked in ``keep`` (all when None), chunk by chunk."""
    if keep is None:
        yield from parts
        return
    start = 0
    for part in parts:
        idx = np.flatnonzero(keep[start:start + len(part)])
        if len(idx):
            yield part.select(idx.tolist())
        start += len(part)


def _concat(parts: list[TokenSeqs]) -> TokenSeqs:
    lengths = np.concatenate([p.lengths for p in parts])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return TokenSeqs(np.concatenate([p.ids for p in parts]), np.concatenate([p.labels for p in parts]), offsets)


def _write_split(results: Iterable[tuple[tuple[Any, ...], int]], staging: Path, name: str, *, packing: bool,
                 max_length: int, seed: int, advance: Callable[[int], None]) -> tuple[SplitStats, Counter]:
    """Write the rows of one split (module doc, step 3); returns its counts and label counts (classify)."""
    total = SplitStats()
    labels: Counter = Counter()
    buffer: list[TokenSeqs] = []
    buffered = packs = 0
    with arrow_writer(staging / name / "00000.arrow") as write:
        def put(table) -> None:
            if table.num_rows:
                write(table)

        def flush() -> None:
            nonlocal buffer, buffered, packs
            ds, rows = pack(_concat(buffer), max_length, chunk_seed(seed, packs))
            put(ds.data.table)
            total.rows += rows
            buffer, buffered, packs = [], 0, packs + 1

        for encoded, n in results:
            rows, split = encoded[0], encoded[1]
            for field in ("examples", "windows", "tokens", "trained_tokens", "truncated", "dropped_tokens",
                          "dropped_examples"):
                setattr(total, field, getattr(total, field) + getattr(split, field))
            if not isinstance(rows, TokenSeqs):  # classify: rows as encoded
                put(rows)
                total.rows += split.rows
                labels.update(encoded[2])
            elif packing:
                if buffer and buffered + len(rows.ids) > PACK_TOKENS:
                    flush()
                buffer.append(rows)
                buffered += len(rows.ids)
            else:
                put(unpacked(rows).data.table)
                total.rows += len(rows)
            advance(n)
        if buffer:
            flush()
        if not total.rows:  # nothing written (every example dropped): an empty table with the columns
            empty = TokenSeqs(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(1, np.int64))
            write((pack(empty, max_length, seed)[0] if packing else unpacked(empty)).data.table)
    total.packing_efficiency = total.tokens / max(1, total.rows * max_length)
    return total, labels


def _label_codes(load: Load, value: str | list[str], key: str, column: str) -> tuple[np.ndarray, dict[str, str]]:
    """(per record: the index of its label name among the second's, {label name: where it first appears} in
    first-seen order), one pass over ``value``."""
    codes, index, first = array("i"), {}, {}
    for part in load(value, key):
        for i, v in enumerate(part.columns[column]):
            name = label_name(v)
            if name not in index:
                index[name], first[name] = len(index), part.where(i)
            codes.append(index[name])
    return np.frombuffer(codes, dtype=np.int32) if len(codes) else np.zeros(0, np.int32), first


def _plan(recipe: Recipe, load: Load, label: str | None
          ) -> tuple[np.ndarray | None, np.ndarray | None, dict[int, str] | None]:
    """(train records mask, eval records mask (None: eval from its own source, or none), id2label). An eval
    label training never has is an error naming where it first appears: every record with it is an eval one."""
    d = recipe.data
    fraction = isinstance(d.eval, float)
    if label is None and not fraction:
        return None, None, None
    if label is not None:
        codes, first = _label_codes(load, d.train, "data.train", label)
        n = len(codes)
    else:
        n = sum(len(part) for part in load(d.train, "data.train"))
    train_mask = eval_mask = None
    if fraction:
        tr, ev = split_fraction(n, d.eval, recipe.train.seed)
        train_mask, eval_mask = np.zeros(n, bool), np.zeros(n, bool)
        train_mask[tr], eval_mask[ev] = True, True
    if label is None:
        return train_mask, eval_mask, None
    names = list(first)
    train_codes = codes if train_mask is None else codes[train_mask]
    id2label = label_ids_of({names[c] for c in np.unique(train_codes)}, label, recipe.model.num_labels)
    eval_codes = codes[eval_mask] if fraction else codes[:0]  # none without an eval split
    if isinstance(d.eval, (str, list)):  # from its own source
        eval_codes, first = _label_codes(load, d.eval, "data.eval", label)
        names = list(first)
    unseen = {names[c] for c in np.unique(eval_codes)} - set(id2label.values())
    if unseen:
        raise unseen_labels_error({name: where for name, where in first.items() if name in unseen}, id2label)
    return train_mask, eval_mask, id2label


def build_records_prepared(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, staging: Path,
                           progress: Progress) -> tuple[DataStats, dict[int, str] | None]:
    """Write the instruct or classify rows of ``recipe`` to ``staging/{train,eval}/``; returns the
    statistics and (classify) id2label."""
    d = recipe.data
    stats = DataStats(task=recipe.task, max_length=d.max_length, packing=d.packing)
    if recipe.task == "instruct":
        template = load_template(d.template)
        load: Load = partial(iter_records, required=template.required, optional=template.optional,
                             text_fields=[*template.required, *template.optional], column_map=d.column_map,
                             purpose=f"template '{template.name}'", max_record_bytes=d.max_record_bytes)
        label = None
    else:
        if d.packing:
            raise RecipeError("data.packing applies to the causal tasks (instruct, fim), not to classify",
                              hint="set data.packing: false")
        fields = [d.text_column, *([d.text_pair_column] if d.text_pair_column else [])]
        load = partial(iter_records, required=[*fields, d.label_column], text_fields=fields,
                       column_map=d.column_map, purpose="task classify", max_record_bytes=d.max_record_bytes)
        label, template = d.label_column, None
    with quiet_datasets():  # one bar per chunk would be noise; ours counts records
        train_mask, eval_mask, id2label = _plan(recipe, load, label)
        encode = (partial(tokenize_instruct, template=template, tokenizer=tokenizer, max_length=d.max_length,
                          train_on_prompt=d.train_on_prompt) if label is None else
                  partial(tokenize_classify, tokenizer=tokenizer, text=d.text_column, pair=d.text_pair_column,
                          label=label, id2label=id2label, max_length=d.max_length, side=d.truncation_side))
        splits: list[tuple[str, Iterable[Records]]] = [("train", _select(load(d.train, "data.train"), train_mask))]
        if eval_mask is not None:
            splits.append(("eval", _select(load(d.train, "data.train"), eval_mask)))
        elif d.eval is not None:
            splits.append(("eval", load(d.eval, "data.eval")))
        for name, parts in splits:
            with workers(d.num_proc, encode) as run:
                split, counts = _write_split(run(_encode, parts), staging, name, packing=d.packing,
                                             max_length=d.max_length, seed=recipe.train.seed,
                                             advance=progress.task(f"tokenize {name}"))
            class_counts = {n: counts.get(n, 0) for n in id2label.values()} if id2label is not None else None
            if name == "train":
                vars(stats).update(vars(split))  # the train split's counts at the top level
                stats.class_counts = class_counts
            else:
                stats.eval, stats.eval_class_counts = split, class_counts
    return stats, id2label

