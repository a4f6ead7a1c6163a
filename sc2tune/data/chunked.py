"""Task fim in bounded memory: documents go read -> FIM -> tokens -> packed rows -> Arrow file, a chunk at a time.

1. *List.* The files of each folder of code (``list_files``: include/exclude, sorted) become file
   references; record sources (a text column) become documents. Nothing is read yet.
2. *Scan.* Workers read and classify every file (``classify_text``: binary, non-UTF-8, generated, ...)
   and report only the skip reason; kept files are ordered by repository, then path, with
   ``fim.repo_context`` (else as listed: sorted paths).
3. *Split.* ``data.eval`` as a fraction holds out documents (or whole repositories):
   :func:`~sc2tune.data.split.split_documents` over the kept documents.
4. *Chunks.* Each split is cut into runs of consecutive documents of at most :data:`CHUNK_BYTES` (a
   larger document is a chunk alone). Chunk ``c`` of a split with seed ``s`` (train: ``data.fim.seed``, else ``train.seed``,
   eval: ``train.seed + 1``) draws its FIM choices and packs with

       s_0 = s,    s_c = SeedSequence([|s|, c]).generate_state(1)[0]   (c >= 1)

   so its rows depend on its own documents and ``s_c`` alone (packing never crosses a chunk boundary).
5. *Cache per chunk.* Chunk ``c`` is keyed by :func:`~sc2tune.data.cache_key.chunk_key`: the set key's
   inputs less its file list, ``s_c``, and the identity of each of its documents (a file: root, path,
   repository and :func:`~sc2tune.data.cache_key.file_identity`; a record: its text's sha256). A chunk
   already in ``CACHE/chunks/`` (verified, :mod:`sc2tune.data.store`) is reused with its counts; a
   worker turns each missing one into one Arrow file: read its files,
   :func:`~sc2tune.data.fim.build_fim`, best-fit packing within the chunk
   (:func:`~sc2tune.data.packing.pack`), ``chunks/CKEY/rows.arrow``. The prepared folder lists the
   chunks of each split in order.

An edit to one file changes the key of its chunk only, as long as the chunk boundaries stay where they
were: a touch or a same-size edit always, a size change unless it moves a boundary (boundaries are cut
greedily by size, so a file that grows past the room left in its chunk shifts the chunks after it, which
are then rebuilt: the price of rows byte-identical to a build from scratch). Adding or removing a file
shifts the chunks after it the same way, and with ``data.eval`` a fraction changes the held-out draw.

Chunks and seeds depend on the data alone, never on ``data.num_proc``, so the rows are the same for any
number of workers. A worker holds one chunk's text and tokens at a time: peak memory is set by
:data:`CHUNK_BYTES` and the number of workers, not by the size of the corpus.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from transformers import PreTrainedTokenizerBase

from sc2tune.data.cache_key import chunk_key, file_identity
from sc2tune.data.code_folder import WARN_REASONS, FolderScan, list_files, read_code_file
from sc2tune.data.fim import CodeDoc, build_fim, runs
from sc2tune.data.packing import IGNORE, pack, unpacked
from sc2tune.data.progress import Progress
from sc2tune.data.sources import Source, iter_records, resolve_sources
from sc2tune.data.split import split_documents
from sc2tune.data.stats import DataStats, SplitStats
from sc2tune.data.store import chunk_rel, clear_chunk_leftovers, load_chunk, put_chunk
from sc2tune.data.workers import Map, job, workers
from sc2tune.errors import DataError
from sc2tune.recipe import FimSpec, Recipe

log = logging.getLogger(__name__)

#: Source bytes per chunk (documents are never split across chunks).
CHUNK_BYTES = 4 * 2**20
#: Files per scan task.
SCAN_BATCH = 256


@dataclass(frozen=True)
class FileDoc:
    """A code file not read yet: where it is and the document it becomes."""

    root: str
    rel: str  # posix path relative to root
    path: str  # the document's path (relative to its repository with repo_context)
    repo: str | None
    size: int


Item = FileDoc | CodeDoc


@dataclass(frozen=True)
class _Job:
    """What every worker needs (set once per worker process)."""

    tokenizer: PreTrainedTokenizerBase
    fim: FimSpec
    max_length: int
    packing: bool
    max_file_bytes: int
    root: str  # the cache folder


def _scan(batch: list[FileDoc]) -> list[str | None]:
    return [read_code_file(f.root, f.rel, job().max_file_bytes)[0] for f in batch]


def _chunk(task: tuple[str, int, list[Item]]) -> dict[str, Any]:
    """Build chunk ``task = (key, seed, items)`` and write it to the cache; returns its meta (counts, files)."""
    ckey, seed, items = task
    settings: _Job = job()
    docs: list[CodeDoc] = []
    for item in items:
        if isinstance(item, CodeDoc):
            docs.append(item)
            continue
        reason, text = read_code_file(item.root, item.rel, settings.max_file_bytes)
        if reason is None:
            docs.append(CodeDoc(text, item.path, item.repo))
    seqs, counts = build_fim(docs, settings.tokenizer, settings.fim, settings.max_length, seed)
    if settings.packing:
        ds, rows = pack(seqs, settings.max_length, seed)
    else:
        ds, rows = unpacked(seqs), len(seqs)
    out = {k: int(counts[k]) for k in ("psm", "spm", "plain", "fallback", "windows")}
    out.update(examples=len(docs), changed=len(items) - len(docs), rows=rows, tokens=int(len(seqs.ids)),
               trained_tokens=int((seqs.labels != IGNORE).sum()))
    return put_chunk(Path(settings.root), ckey, ds.data.table, out)


def identity(item: Item, check: str) -> list[Any]:
    """What a chunk's key sees of one of its documents (module doc, step 5)."""
    if isinstance(item, CodeDoc):
        return ["doc", item.path, item.repo, hashlib.sha256(item.text.encode("utf-8", "surrogatepass")).hexdigest()]
    return ["file", item.root, item.rel, item.path, item.repo,
            *file_identity(Path(item.root) / item.rel, check)[1:]]


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of a split seeded ``seed`` (see module doc)."""
    return seed if index == 0 else int(np.random.SeedSequence([abs(seed), index]).generate_state(1)[0])


def record_docs(recipe: Recipe, src: Source, key: str, stats: DataStats) -> list[CodeDoc]:
    """FIM documents from a record source (``data.text_column`` of each record); empty texts are counted
    as skipped. Repository context needs a folder, so it is an error here."""
    d = recipe.data
    if d.fim.repo_context:
        raise DataError(f"{key}: {src.path}: fim.repo_context needs a folder of repositories",
                        hint="point data.train at a folder whose sub-folders are repositories")
    value = src.path if src.kind != "hub" else (f"hub:{src.path}" + (f":{src.split}" if src.split else "")
                                                + (f"@{src.revision}" if src.revision else ""))
    docs = []
    for part in iter_records(value, key, required=[d.text_column], text_fields=[d.text_column],
                             column_map=d.column_map, purpose="task fim", max_record_bytes=d.max_record_bytes):
        for i, text in enumerate(part.columns[d.text_column]):
            if text.strip():
                docs.append(CodeDoc(text, part.where(i)))
            else:
                stats.skipped["empty"] = stats.skipped.get("empty", 0) + 1
    return docs


def _list(recipe: Recipe, value: str | list[str], key: str, stats: DataStats, run: Map,
          progress: Progress) -> list[Item]:
    """The documents of ``value`` in order (steps 1 and 2 of the module doc), skips counted in ``stats``."""
    d = recipe.data
    items: list[Item] = []
    for src in resolve_sources(value, key):
        if src.kind == "code":
            root = Path(src.path)
            files = []
            listing = FolderScan()  # folders that cannot be listed, symlinked folders, then the files the scan skips
            for rel in list_files(root, d.include, d.exclude, listing):
                if d.fim.repo_context and len(rel.parts) > 1:
                    repo, path = rel.parts[0], PurePosixPath(*rel.parts[1:]).as_posix()
                else:
                    repo, path = (root.resolve().name if d.fim.repo_context else None), rel.as_posix()
                try:
                    size = (root / rel).stat().st_size
                except OSError:  # gone or a broken link: the scan counts it unreadable
                    size = 0
                files.append(FileDoc(str(root), rel.as_posix(), path, repo, size))
            batches = [files[i:i + SCAN_BATCH] for i in range(0, len(files), SCAN_BATCH)]
            advance = progress.task(f"read {root}", total=len(files))
            kept: list[FileDoc] = []
            for batch, reasons in zip(batches, run(_scan, batches), strict=True):
                for f, reason in zip(batch, reasons, strict=True):
                    if reason is None:
                        kept.append(f)
                    else:
                        listing.skip(reason, PurePosixPath(f.rel))
                advance(len(batch))
            for reason, n in listing.skipped.items():
                stats.skipped[reason] = stats.skipped.get(reason, 0) + n
                (log.warning if reason in WARN_REASONS else log.info)("%s: skipped %d %s file(s), e.g. %s", root, n, reason, ", ".join(listing.examples[reason]))
            if not kept:
                raise DataError(f"{key}: no code files read from {root}",
                                hint=f"data.include is {d.include}, data.exclude is {d.exclude}; "
                                f"skipped: {dict(listing.skipped) or 'none'}")
            if d.fim.repo_context:
                kept.sort(key=lambda f: (f.repo or "", f.path))
            items.extend(kept)
            continue
        items.extend(record_docs(recipe, src, key, stats))
    stats.skipped_files = sum(stats.skipped.values())
    return items


def build_fim_prepared(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, root: Path, inputs: dict[str, Any],
                       progress: Progress) -> tuple[DataStats, dict[str, Any]]:
    """The fim rows of ``recipe`` as chunks in the cache folder ``root`` (module doc), each built only when
    missing; ``inputs`` are the set key's inputs (:func:`~sc2tune.data.cache_key.key_inputs`). Returns the
    statistics and what the prepared folder's meta adds: ``parts``, the chunks of each split in order (paths
    relative to ``root``), ``files``, their checksums, and ``chunks``, how many were built or reused."""
    d = recipe.data
    full = d.cache_check == "content"
    stats = DataStats(task="fim", max_length=d.max_length, packing=d.packing)
    out: dict[str, Any] = {"parts": {}, "files": {}, "chunks": {"built": 0, "reused": 0}}
    clear_chunk_leftovers(root)
    settings = _Job(tokenizer, d.fim, d.max_length, d.packing, d.max_file_bytes, str(root))
    with workers(d.num_proc, settings) as run:
        train = _list(recipe, d.train, "data.train", stats, run, progress)
        evaluation: list[Item] | None = None
        if isinstance(d.eval, float):
            train, evaluation = split_documents(train, d.eval, recipe.train.seed, by_repo=d.fim.repo_context)
        elif d.eval is not None:
            evaluation = _list(recipe, d.eval, "data.eval", stats, run, progress)
        fim_seed = recipe.train.seed if d.fim.seed is None else d.fim.seed  # the eval split keeps train.seed + 1
        for name, items, seed in (("train", train, fim_seed), ("eval", evaluation, recipe.train.seed + 1)):
            if items is None:
                continue
            bounds = runs([i.size if isinstance(i, FileDoc) else len(i.text) for i in items], CHUNK_BYTES)
            parts = [items[a:b] for a, b in bounds]
            seeds = [chunk_seed(seed, c) for c in range(len(parts))]
            keys = [chunk_key(inputs, s, [identity(i, d.cache_check) for i in part])
                    for s, part in zip(seeds, parts, strict=True)]
            metas: list[dict[str, Any] | None] = [load_chunk(root, k, full=full) for k in keys]
            tasks = [(k, s, part) for k, s, part, m in zip(keys, seeds, parts, metas, strict=True) if m is None]
            out["chunks"]["built"] += len(tasks)
            out["chunks"]["reused"] += len(keys) - len(tasks)
            out["parts"][name] = [chunk_rel(k) for k in keys]
            advance = progress.task(f"FIM {name}", total=len(tasks))
            built = iter(run(_chunk, tasks))
            total: Counter = Counter()
            for meta in metas:
                if meta is None:
                    meta = next(built)
                    advance(1)
                total.update(meta["counts"])
                out["files"].update(meta["files"])
            if total["changed"]:
                log.warning("data: %d file(s) changed while being read and were left out", total["changed"])
            split = SplitStats(examples=total["examples"], windows=total["windows"], tokens=total["tokens"],
                               trained_tokens=total["trained_tokens"], rows=total["rows"],
                               packing_efficiency=total["tokens"] / max(1, total["rows"] * d.max_length))
            if name == "train":
                vars(stats).update(vars(split))  # the train split's counts at the top level
                stats.fim = {k: int(total[k]) for k in ("psm", "spm", "plain", "fallback")}
            else:
                stats.eval = split
    log.info("data: %d chunk(s) built, %d reused from the cache", out["chunks"]["built"], out["chunks"]["reused"])
    return stats, out
