"""Prepared data: find the recipe's rows on disk under their content key, or build them there once.

This is the one road from a recipe to rows, for every task. With ``data.cache_dir: null`` the rows are
prepared the same way into a temporary folder of this process (:func:`~sc2tune.data.store.temporary_root`,
removed when it exits), and the bundle names no prepared folder (a resumed run prepares them again).

``prepared_bundle`` computes the key (:mod:`sc2tune.data.cache_key`), and on a miss builds the rows into
a staging folder that :func:`~sc2tune.data.store.build_once` renames into place: task fim through the
chunked builder (:mod:`sc2tune.data.chunked`), instruct and classify through the streaming record builder
(:mod:`sc2tune.data.stream`), both in bounded memory with ``data.num_proc`` workers. Either way the rows
are read back memory-mapped, so every process of a job shares one copy in the page cache.
One log line says hit or miss, and where (a miss says so before it builds).

The key counts the tokenizer by its files (:mod:`sc2tune.data.cache_key`). A tokenizer object that is not
what those files load (its fingerprint differs from the one the recipe's own tokenizer has: read from
the prepared folder's meta.json, or on a miss from the tokenizer loaded afresh) adds its fingerprint to
the key, so its rows never land where :func:`~sc2tune.data.lookup.lookup_prepared` would find them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import PreTrainedTokenizerBase

from sc2tune.data.cache_key import data_key, key_inputs, tokenizer_fingerprint, tokenizer_folder
from sc2tune.data.chunked import build_fim_prepared
from sc2tune.data.collate import CausalCollator, ClassifyCollator
from sc2tune.data.integrity import check_cache_folder
from sc2tune.data.progress import Progress
from sc2tune.data.stats import DataStats, no_rows_error
from sc2tune.data.store import (
    build_once,
    cache_root,
    is_complete,
    open_split,
    read_meta,
    read_stats,
    temporary_root,
    verified_meta,
)
from sc2tune.data.stream import build_records_prepared
from sc2tune.errors import DataError
from sc2tune.recipe import Recipe
from sc2tune.tokens import set_pad_token

if TYPE_CHECKING:
    import datasets
    import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataBundle:
    """What the trainer consumes (formats: :mod:`sc2tune.data.collate`). ``prepared`` is the cache folder the
    rows are memory-mapped from (None for the temporary one of ``data.cache_dir: null``), ``checksum`` its
    meta.json's checksum."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    collator: Callable[[list[dict]], dict[str, torch.Tensor]]
    stats: DataStats
    id2label: dict[int, str] | None = None
    prepared: str | None = None
    checksum: str | None = None  # the prepared folder's meta.json checksum (a run's data.json records it)


def open_prepared(folder: Path, pad_token_id: int, *, full: bool = False, expected: str | None = None
                  ) -> DataBundle:
    """The bundle of a complete prepared folder (rows memory-mapped), after every check of
    :func:`~sc2tune.data.store.verified_meta` (``full``: every byte of every part). ``expected``: the
    checksum a run's data.json recorded for it; any other is refused."""
    check_cache_folder(folder.parent)
    meta = verified_meta(folder.parent, folder, full=full)
    if expected is not None and meta["checksum"] != expected:
        raise DataError(f"{folder / 'meta.json'}: not the prepared data this run started with (checksum "
                        f"{meta['checksum'][:16]}..., the run's data.json says {expected[:16]}...); it is not used",
                        hint="start a new run (--overwrite or another output_dir), or put back the prepared "
                        "folder the run was trained on")
    train = open_split(folder, "train", meta)
    if train is None:
        raise DataError(f"{folder}: prepared data without training rows", hint=f"delete {folder} to rebuild it")
    stats, id2label = read_stats(meta)
    collator = (ClassifyCollator(pad_token_id) if meta["task"] == "classify"
                else CausalCollator(pad_token_id, packed=meta["packing"]))
    return DataBundle(train, open_split(folder, "eval", meta), collator, stats, id2label,
                      prepared=str(folder), checksum=meta["checksum"])


_OWN_FINGERPRINTS: dict[str, str] = {}


def _own_fingerprint(recipe: Recipe, folder: Path, files: dict[str, Any]) -> str:
    """The fingerprint of the tokenizer the recipe's ``files`` load, pad token set (``folder``: the prepared
    folder of the files-only key, whose meta.json keeps it once built; else loaded from the folder or hub id
    the files are in (:func:`~sc2tune.data.cache_key.tokenizer_folder`), once per process)."""
    if is_complete(folder):
        known = read_meta(folder).get("tokenizer_object")
        if known:
            return known
    memo = json.dumps(files, sort_keys=True)
    if memo not in _OWN_FINGERPRINTS:
        from transformers import AutoTokenizer

        where = tokenizer_folder(recipe.model)  # the files are local: in a folder or the hub cache
        tokenizer = AutoTokenizer.from_pretrained(str(where), local_files_only=True,
                                                  revision=recipe.model.revision,
                                                  trust_remote_code=recipe.model.trust_remote_code)
        set_pad_token(tokenizer)
        _OWN_FINGERPRINTS[memo] = tokenizer_fingerprint(tokenizer)
    return _OWN_FINGERPRINTS[memo]


def _inputs(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, fingerprint: str, *, temporary: bool = False
            ) -> dict[str, Any]:
    """:func:`key_inputs`, plus the tokenizer object's fingerprint when it is not the recipe's own; with
    ``temporary`` (``data.cache_dir: null``: never looked up) always, so the recipe's own is never loaded."""
    inputs = key_inputs(recipe, tokenizer)
    assert inputs is not None  # given a tokenizer, key_inputs always answers
    own = inputs["tokenizer"]
    if temporary or ("files" in own and _own_fingerprint(recipe, cache_root(recipe.data.cache_dir or "auto")
                                                             / data_key(inputs), own) != fingerprint):
        inputs["tokenizer"] = {**own, "object": fingerprint}
    return inputs


def prepared_key(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> str:
    """The content key of ``recipe``'s rows made with ``tokenizer`` (module doc)."""
    return data_key(_inputs(recipe, tokenizer, tokenizer_fingerprint(tokenizer)))


def prepared_bundle(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, progress: Progress) -> DataBundle:
    """The recipe's rows from ``data.cache_dir`` (built there first on a miss; see module doc)."""
    temporary = recipe.data.cache_dir is None
    root = temporary_root() if temporary else cache_root(recipe.data.cache_dir)
    fingerprint = tokenizer_fingerprint(tokenizer)
    inputs = _inputs(recipe, tokenizer, fingerprint, temporary=temporary)
    key = data_key(inputs)

    def build(staging: Path) -> dict[str, Any]:  # on a miss: the rows, and the meta of the prepared folder
        log.info("data: cache miss, preparing %s", root / key)
        id2label = None
        extra: dict[str, Any] = {}
        if recipe.task == "fim":
            stats, extra = build_fim_prepared(recipe, tokenizer, root, inputs, progress)
        else:
            stats, id2label = build_records_prepared(recipe, tokenizer, staging, progress)
        if stats.rows == 0:
            raise no_rows_error(stats, recipe.data.train)
        return {"task": recipe.task, "packing": recipe.data.packing, "stats": stats.to_dict(),
                "id2label": {str(k): v for k, v in id2label.items()} if id2label is not None else None,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "inputs": inputs, "tokenizer_object": fingerprint,
                **extra}

    start = time.perf_counter()
    with progress.running():
        folder, hit = build_once(root, key, build, timeout=recipe.data.cache_lock_timeout)
    if hit:
        log.info("data: cache hit, prepared data in %s", folder)
    else:
        log.info("data: prepared %s in %.1f s", folder, time.perf_counter() - start)
    bundle = open_prepared(folder, tokenizer.pad_token_id, full=recipe.data.cache_check == "content")
    return dataclasses.replace(bundle, prepared=None, checksum=None) if temporary else bundle
