"""The data pipeline's face: recipe -> token rows for the trainer (a :class:`DataBundle`).

``build_datasets(recipe, tokenizer)`` is the one entry point (the row and batch formats the trainer relies
on are in :mod:`sc2tune.data.collate`). Where the rows come from:

* ``data.cache_dir`` set (default ``auto``): prepared on disk under a content key and memory-mapped
  (:mod:`sc2tune.data.prepare`; key in :mod:`sc2tune.data.cache_key`, folders and locks in
  :mod:`sc2tune.data.store`, built in bounded chunks by :mod:`sc2tune.data.chunked` (fim) and
  :mod:`sc2tune.data.stream` (instruct, classify); a hit found light by :mod:`sc2tune.data.lookup`);
* ``data.cache_dir: null``: prepared the same way into a temporary folder of this process, removed when it
  exits (:func:`sc2tune.data.store.temporary_root`);
* ``prepared=FOLDER``: exactly that prepared folder (a resumed run reads the rows it started with).

Tasks: instruct (template, response-only labels), fim (character-level PSM/SPM FIM on code), classify
(text -> eos-terminated ids, label ids). Causal rows are packed (``data.packing``, isolated per document
through restarting position ids) or padded per batch by the collator. The eval split is a seeded
fraction of the training examples (``data.eval: 0.1``), another source, or none. Everything random
derives from ``recipe.train.seed``.

Importing the package imports neither torch nor transformers nor datasets, so
:func:`sc2tune.data.lookup.lookup_prepared` finds prepared data in about a second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sc2tune.data.store import is_complete
from sc2tune.recipe import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from sc2tune.data.prepare import DataBundle

log = logging.getLogger(__name__)

__all__ = ["build_datasets"]


def build_datasets(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, *, show_progress: bool = True,
                   prepared: str | Path | None = None, prepared_checksum: str | None = None) -> DataBundle:
    """Train (and eval) datasets, collator and statistics for ``recipe`` (see module doc for where from).

    ``prepared_checksum``: the checksum a run's data.json recorded for ``prepared``; a prepared folder
    that no longer carries it is refused (:func:`sc2tune.data.prepare.open_prepared`).

    The tokenizer gets ``<fim_pad>`` as its pad token when it has none (never eos).
    """
    from sc2tune.data.prepare import open_prepared, prepared_bundle, prepared_key
    from sc2tune.data.progress import Progress
    from sc2tune.tokens import set_pad_token

    set_pad_token(tokenizer)
    if prepared is not None and is_complete(Path(prepared)):
        log.info("data: prepared data of the run in %s (not rebuilt)", prepared)
        if prepared_key(recipe, tokenizer) != Path(prepared).name:
            log.warning("data: a source file, the tokenizer or a data key changed since this run started; "
                        "it goes on with the rows it started with (%s)", prepared)
        return open_prepared(Path(prepared), tokenizer.pad_token_id, full=recipe.data.cache_check == "content",
                             expected=prepared_checksum)
    bundle = prepared_bundle(recipe, tokenizer, Progress(show_progress))  # rows: a build without any raises
    s = bundle.stats
    log.info("data: %d examples -> %d rows, %d tokens (%d trained), packing efficiency %.3f, %d truncated, "
             "%d skipped files", s.examples, s.rows, s.tokens, s.trained_tokens, s.packing_efficiency,
             s.truncated, s.skipped_files)
    return bundle
