"""Find a recipe's prepared data without loading anything heavy: a cache hit in about a second.

``lookup_prepared(recipe)`` computes the same content key as the full path
(:func:`sc2tune.data.cache_key.key_inputs`: the tokenizer counts by its files, the sources by a stat of
each file, no file is read but the tokenizer's and the recipe's template) and returns the prepared
folder with its statistics and label names from its ``meta.json``, or None when there is none (or the
tokenizer's files are not on this machine yet). It imports neither torch nor transformers nor datasets:
``sc2tune data RECIPE --prepare`` answers a hit from here and only a miss loads the tokenizer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sc2tune.data.cache_key import data_key, key_inputs
from sc2tune.data.integrity import check_cache_folder
from sc2tune.data.stats import DataStats
from sc2tune.data.store import cache_root, is_complete, read_stats, verified_meta
from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prepared:
    """A complete prepared folder and what its meta.json says about the rows in it."""

    folder: Path
    stats: DataStats
    id2label: dict[int, str] | None


def lookup_prepared(recipe: Recipe) -> Prepared | None:
    """The prepared data of ``recipe`` in ``data.cache_dir`` when it is there (module doc), else None."""
    if recipe.data.cache_dir is None:
        return None
    inputs = key_inputs(recipe)
    if inputs is None:
        return None
    root = cache_root(recipe.data.cache_dir)
    check_cache_folder(root)
    folder = root / data_key(inputs)
    if not is_complete(folder):
        return None
    meta = verified_meta(root, folder, full=recipe.data.cache_check == "content")
    log.info("data: cache hit, prepared data in %s", folder)
    return Prepared(folder, *read_stats(meta))
