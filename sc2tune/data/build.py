"""The in-memory builders: recipe -> sources -> template / FIM / labels -> token rows (today's path).

Every split is built in RAM (Arrow tables backed by process memory). With ``data.cache_dir`` set,
:mod:`sc2tune.data.prepare` writes these same rows to disk instead, in bounded memory (task fim through
:mod:`sc2tune.data.chunked`, instruct and classify through :mod:`sc2tune.data.stream`); with
``data.cache_dir: null`` they are used as built here.

* instruct: records -> Alpaca-style template -> prompt and response tokenised separately -> labels on
  the response and the closing ``<|endoftext|>`` only (:mod:`sc2tune.data.instruct`);
* fim: a folder of code (or a text column) -> windows -> character-level PSM/SPM FIM, optionally in
  StarCoder2's repository format, every token trained (:mod:`sc2tune.data.fim`);
* classify: text (+ pair) -> ids ending in eos, label names -> ids (:mod:`sc2tune.data.classification`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from sc2tune.data.classification import check_eval_labels, label_ids, tokenize_classify
from sc2tune.data.code_folder import WARN_REASONS, scan_folder
from sc2tune.data.collate import CausalCollator, ClassifyCollator
from sc2tune.data.fim import CodeDoc, build_fim
from sc2tune.data.instruct import tokenize_instruct
from sc2tune.data.packing import IGNORE, TokenSeqs, pack, unpacked
from sc2tune.data.sources import Records, Source, load_records, resolve_sources
from sc2tune.data.stats import DataStats, SplitStats
from sc2tune.data.templates import load_template
from sc2tune.errors import DataError, RecipeError
from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DataBundle:
    """What the trainer consumes (formats: :mod:`sc2tune.data.collate`). ``prepared`` is the on-disk folder the
    rows are memory-mapped from (None when they were built in memory), ``checksum`` its meta.json's checksum."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    collator: Callable[[list[dict]], dict[str, torch.Tensor]]
    stats: DataStats
    id2label: dict[int, str] | None = None
    prepared: str | None = None
    checksum: str | None = None  # the prepared folder's meta.json checksum (a run's data.json records it)


def split_fraction(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, eval indices): a seeded permutation, the first max(1, round(n * fraction)) for eval.

    Both are returned sorted, so examples keep their source order within each split.
    """
    n_eval = max(1, round(n * fraction))
    if n_eval >= n:
        raise DataError(f"data.eval: {fraction} of {n} example(s) leaves nothing to train on",
                        hint="add data, lower data.eval, or set data.eval: null")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def split_documents(docs: list[T], fraction: float, seed: int, *, by_repo: bool) -> tuple[list[T], list[T]]:
    """(train, eval) documents (anything with a ``repo``) for ``data.eval`` as a fraction: the
    :func:`split_fraction` of the documents, or with ``by_repo`` of the sorted repository names (whole
    repositories held out). Each keeps the documents' order."""
    if by_repo:
        repos = sorted({doc.repo or "" for doc in docs})
        _, ev = split_fraction(len(repos), fraction, seed)
        held = {repos[i] for i in ev}
        return [x for x in docs if (x.repo or "") not in held], [x for x in docs if (x.repo or "") in held]
    tr, ev = split_fraction(len(docs), fraction, seed)
    return [docs[i] for i in tr], [docs[i] for i in ev]


# ---- progress ---------------------------------------------------------------------------------------

class Progress:
    """Rich progress bars, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True, console=Console(stderr=True))

    def task(self, description: str, total: int | None = None) -> Callable[..., None] | None:
        if self.bar is None:
            return None
        task_id = self.bar.add_task(description, total=total)

        def advance(n: int, total: int | None = None) -> None:
            if total is not None:
                self.bar.update(task_id, total=total)
            self.bar.advance(task_id, n)

        return advance

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        was = datasets.is_progress_bar_enabled()
        if self.bar is None:
            datasets.disable_progress_bars()
            try:
                yield
            finally:
                if was:
                    datasets.enable_progress_bars()
            return
        with self.bar:
            yield


# ---- shared tail: rows and counts ---------------------------------------------------------------------

def _rows(seqs: TokenSeqs, stats: SplitStats, *, packing: bool, max_length: int, seed: int) -> datasets.Dataset:
    if packing:
        ds, rows = pack(seqs, max_length, seed)
    else:
        ds, rows = unpacked(seqs), len(seqs)
    stats.tokens = int(len(seqs.ids))
    stats.trained_tokens = int((seqs.labels != IGNORE).sum())
    stats.rows = rows
    stats.packing_efficiency = stats.tokens / max(1, rows * max_length)
    return ds


def _fill(stats: DataStats, split: SplitStats) -> None:
    for name, value in split.to_dict().items():
        setattr(stats, name, value)


# ---- tasks ------------------------------------------------------------------------------------------

def _eval_records(recipe: Recipe, records: Records, load: Callable[[str | list[str], str], Records]
                  ) -> tuple[Records, Records | None]:
    spec = recipe.data.eval
    if spec is None:
        return records, None
    if isinstance(spec, float):
        tr, ev = split_fraction(len(records), spec, recipe.train.seed)
        return records.select(tr), records.select(ev)
    return records, load(spec, "data.eval")


def _instruct(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, progress: Progress) -> DataBundle:
    d = recipe.data
    template = load_template(d.template)

    def load(value: str | list[str], key: str) -> Records:
        return load_records(value, key, required=template.required, optional=template.optional,
                            text_fields=[*template.required, *template.optional], column_map=d.column_map,
                            purpose=f"template '{template.name}'", max_record_bytes=d.max_record_bytes)

    train_rec, eval_rec = _eval_records(recipe, load(d.train, "data.train"), load)
    stats = DataStats(task="instruct", max_length=d.max_length, packing=d.packing)
    out = []
    for name, rec in (("train", train_rec), ("eval", eval_rec)):
        if rec is None:
            out.append(None)
            continue
        seqs, split = tokenize_instruct(rec, template, tokenizer, max_length=d.max_length,
                                        train_on_prompt=d.train_on_prompt, num_proc=d.num_proc,
                                        desc=f"tokenize {name}")
        out.append(_rows(seqs, split, packing=d.packing, max_length=d.max_length, seed=recipe.train.seed))
        if name == "train":
            _fill(stats, split)
        else:
            stats.eval = split
    return DataBundle(out[0], out[1], CausalCollator(tokenizer.pad_token_id, packed=d.packing), stats)


def _code_docs(recipe: Recipe, value: str | list[str], key: str, stats: DataStats, progress: Progress
               ) -> list[CodeDoc]:
    d = recipe.data
    docs: list[CodeDoc] = []
    for src in resolve_sources(value, key):
        if src.kind == "code":
            scan = scan_folder(src.path, include=d.include, exclude=d.exclude, max_file_bytes=d.max_file_bytes,
                               by_repo=d.fim.repo_context, progress=progress.task(f"read {src.path}"))
            for reason, n in scan.skipped.items():
                stats.skipped[reason] = stats.skipped.get(reason, 0) + n
                (log.warning if reason in WARN_REASONS else log.info)("%s: skipped %d %s file(s), e.g. %s", src.path, n, reason, ", ".join(scan.examples[reason]))
            if not scan.docs:
                raise DataError(f"{key}: no code files read from {src.path}",
                                hint=f"data.include is {d.include}, data.exclude is {d.exclude}; "
                                f"skipped: {dict(scan.skipped) or 'none'}")
            docs.extend(scan.docs)
            continue
        docs.extend(record_docs(recipe, src, key, stats))
    stats.skipped_files = sum(stats.skipped.values())
    return docs


def record_docs(recipe: Recipe, src: Source, key: str, stats: DataStats) -> list[CodeDoc]:
    """FIM documents from a record source (``data.text_column`` of each record); empty texts are counted
    as skipped. Repository context needs a folder, so it is an error here."""
    d = recipe.data
    if d.fim.repo_context:
        raise DataError(f"{key}: {src.path}: fim.repo_context needs a folder of repositories",
                        hint="point data.train at a folder whose sub-folders are repositories")
    value = src.path if src.kind != "hub" else (f"hub:{src.path}" + (f":{src.split}" if src.split else "")
                                                + (f"@{src.revision}" if src.revision else ""))
    rec = load_records(value, key, required=[d.text_column],
                       text_fields=[d.text_column], column_map=d.column_map, purpose="task fim",
                       max_record_bytes=d.max_record_bytes)
    docs = []
    for i, text in enumerate(rec.columns[d.text_column]):
        if text.strip():
            docs.append(CodeDoc(text, rec.where(i)))
        else:
            stats.skipped["empty"] = stats.skipped.get("empty", 0) + 1
    return docs


def _fim(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, progress: Progress) -> DataBundle:
    d = recipe.data
    stats = DataStats(task="fim", max_length=d.max_length, packing=d.packing)
    train_docs = _code_docs(recipe, d.train, "data.train", stats, progress)
    eval_docs: list[CodeDoc] | None = None
    if isinstance(d.eval, float):
        train_docs, eval_docs = split_documents(train_docs, d.eval, recipe.train.seed, by_repo=d.fim.repo_context)
    elif d.eval is not None:
        eval_docs = _code_docs(recipe, d.eval, "data.eval", stats, progress)
    out = []
    fim_seed = recipe.train.seed if d.fim.seed is None else d.fim.seed  # the eval split keeps train.seed + 1
    for name, docs, seed in (("train", train_docs, fim_seed), ("eval", eval_docs, recipe.train.seed + 1)):
        if docs is None:
            out.append(None)
            continue
        seqs, counts = build_fim(docs, tokenizer, d.fim, d.max_length, seed,
                                 progress=progress.task(f"FIM {name}", total=len(docs)))
        split = SplitStats(examples=len(docs), windows=counts["windows"])
        out.append(_rows(seqs, split, packing=d.packing, max_length=d.max_length, seed=seed))
        if name == "train":
            _fill(stats, split)
            stats.fim = {k: int(counts[k]) for k in ("psm", "spm", "plain", "fallback")}
        else:
            stats.eval = split
    return DataBundle(out[0], out[1], CausalCollator(tokenizer.pad_token_id, packed=d.packing), stats)


def _classify(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, progress: Progress) -> DataBundle:
    d = recipe.data
    if d.packing:
        raise RecipeError("data.packing applies to the causal tasks (instruct, fim), not to classify",
                          hint="set data.packing: false")
    fields = [d.text_column, *([d.text_pair_column] if d.text_pair_column else [])]

    def load(value: str | list[str], key: str) -> Records:
        return load_records(value, key, required=[*fields, d.label_column], text_fields=fields,
                            column_map=d.column_map, purpose="task classify", max_record_bytes=d.max_record_bytes)

    train_rec, eval_rec = _eval_records(recipe, load(d.train, "data.train"), load)
    id2label = label_ids(train_rec, d.label_column, recipe.model.num_labels)
    if eval_rec is not None:
        check_eval_labels(eval_rec, d.label_column, id2label)
    stats = DataStats(task="classify", max_length=d.max_length, packing=False)
    out = []
    for name, rec in (("train", train_rec), ("eval", eval_rec)):
        if rec is None:
            out.append(None)
            continue
        ds, split, counts = tokenize_classify(rec, tokenizer, text=d.text_column, pair=d.text_pair_column,
                                              label=d.label_column, id2label=id2label, max_length=d.max_length,
                                              side=d.truncation_side, num_proc=d.num_proc, desc=f"tokenize {name}")
        out.append(ds)
        if name == "train":
            _fill(stats, split)
            stats.class_counts = counts
        else:
            stats.eval, stats.eval_class_counts = split, counts
    return DataBundle(out[0], out[1], ClassifyCollator(tokenizer.pad_token_id), stats, id2label)


BUILDERS: dict[str, Callable[[Recipe, PreTrainedTokenizerBase, Progress], DataBundle]] = {
    "instruct": _instruct, "fim": _fim, "classify": _classify}
