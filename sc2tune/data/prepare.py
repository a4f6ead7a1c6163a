"""Prepared data: find the recipe's rows on disk under their content key, or build them there once.

``prepared_bundle`` computes the key (:mod:`sc2tune.data.cache_key`), and on a miss builds the rows into
a staging folder that :func:`~sc2tune.data.store.build_once` renames into place: task fim through the
chunked builder (:mod:`sc2tune.data.chunked`, bounded memory, ``data.num_proc`` workers), instruct and
classify through their in-memory builders, their tables then written as Arrow. Either way the rows are
read back memory-mapped, so every process of a job shares one copy in the page cache.
One log line says hit or miss, and where (a miss says so before it builds).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from sc2tune.data.build import BUILDERS, DataBundle, Progress
from sc2tune.data.cache_key import data_key, key_inputs
from sc2tune.data.chunked import build_fim_prepared
from sc2tune.data.collate import CausalCollator, ClassifyCollator
from sc2tune.data.stats import no_rows_error
from sc2tune.data.store import build_once, cache_root, open_split, read_meta, stats_from_dict, write_table
from sc2tune.errors import DataError
from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)


def _build(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, progress: Progress, inputs: dict[str, Any],
           final: Path):
    def build(staging: Path) -> dict[str, Any]:
        log.info("data: cache miss, preparing %s", final)
        id2label = None
        if recipe.task == "fim":
            stats = build_fim_prepared(recipe, tokenizer, staging, progress)
        else:
            bundle = BUILDERS[recipe.task](recipe, tokenizer, progress)
            for split, ds in (("train", bundle.train), ("eval", bundle.eval)):
                if ds is not None:
                    write_table(staging, split, 0, ds.data.table)
            stats, id2label = bundle.stats, bundle.id2label
        if stats.rows == 0:
            raise no_rows_error(stats, recipe.data.train)
        return {"task": recipe.task, "packing": recipe.data.packing, "stats": stats.to_dict(),
                "id2label": {str(k): v for k, v in id2label.items()} if id2label is not None else None,
                "created": time.strftime("%Y-%m-%d %H:%M:%S"), "inputs": inputs}

    return build


def open_prepared(folder: Path, pad_token_id: int) -> DataBundle:
    """The bundle of a complete prepared folder (rows memory-mapped)."""
    meta = read_meta(folder)
    train = open_split(folder, "train")
    if train is None:
        raise DataError(f"{folder}: prepared data without training rows", hint=f"delete {folder} to rebuild it")
    id2label = {int(k): v for k, v in meta["id2label"].items()} if meta.get("id2label") else None
    collator = (ClassifyCollator(pad_token_id) if meta["task"] == "classify"
                else CausalCollator(pad_token_id, packed=meta["packing"]))
    return DataBundle(train, open_split(folder, "eval"), collator, stats_from_dict(meta["stats"]), id2label,
                      prepared=str(folder))


def prepared_bundle(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, progress: Progress) -> DataBundle:
    """The recipe's rows from ``data.cache_dir`` (built there first on a miss; see module doc)."""
    assert recipe.data.cache_dir is not None
    root = cache_root(recipe.data.cache_dir)
    inputs = key_inputs(recipe, tokenizer)
    key = data_key(inputs)
    start = time.perf_counter()
    with progress.running():
        folder, hit = build_once(root, key, _build(recipe, tokenizer, progress, inputs, root / key))
    if hit:
        log.info("data: cache hit, prepared data in %s", folder)
    else:
        log.info("data: prepared %s in %.1f s", folder, time.perf_counter() - start)
    return open_prepared(folder, tokenizer.pad_token_id)
