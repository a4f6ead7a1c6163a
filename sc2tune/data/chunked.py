"""Task fim in bounded memory: documents go read -> FIM -> tokens -> packed rows -> Arrow file, a chunk at a time.

1. *List.* The files of each folder of code (``list_files``: include/exclude, sorted) become file
   references; record sources (a text column) become documents. Nothing is read yet.
2. *Scan.* Workers read and classify every file (``classify_text``: binary, non-UTF-8, generated, ...)
   and report only the skip reason; kept files are ordered as the in-memory path orders them
   (by repository, then path, with ``fim.repo_context``).
3. *Split.* ``data.eval`` as a fraction holds out the same documents (or whole repositories) as the
   in-memory path: :func:`~sc2tune.data.build.split_documents` over the kept documents.
4. *Chunks.* Each split is cut into runs of consecutive documents of at most :data:`CHUNK_BYTES` (a
   larger document is a chunk alone). Chunk ``c`` of a split with seed ``s`` (train: ``train.seed``,
   eval: ``train.seed + 1``) draws its FIM choices and packs with

       s_0 = s,    s_c = SeedSequence([|s|, c]).generate_state(1)[0]   (c >= 1)

   and a worker turns it into one Arrow file: read its files, :func:`~sc2tune.data.fim.build_fim`,
   best-fit packing within the chunk (:func:`~sc2tune.data.packing.pack`), ``SPLIT/c.arrow``.

Chunks and seeds depend on the data alone, never on ``data.num_proc``, so the rows are the same for any
number of workers, and a corpus of one chunk gives exactly the rows of the in-memory path. A worker
holds one chunk's text and tokens at a time: peak memory is set by :data:`CHUNK_BYTES` and the number
of workers, not by the size of the corpus.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from transformers import PreTrainedTokenizerBase

from sc2tune.data.build import Progress, record_docs, split_documents
from sc2tune.data.code_folder import WARN_REASONS, FolderScan, classify_text, list_files, read_regular_file
from sc2tune.data.fim import CodeDoc, build_fim
from sc2tune.data.packing import IGNORE, pack, unpacked
from sc2tune.data.sources import resolve_sources
from sc2tune.data.stats import DataStats, SplitStats
from sc2tune.data.store import write_table
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
    staging: str


_JOB: _Job | None = None


def _init(job: _Job) -> None:
    global _JOB
    _JOB = job


def _read(f: FileDoc, max_file_bytes: int) -> tuple[str | None, str]:
    """(skip reason or None, text) by the in-memory path's rules: only a regular file inside the folder,
    read with a bound (:func:`~sc2tune.data.code_folder.read_regular_file`), then checked for text."""
    reason, data = read_regular_file(Path(f.root) / f.rel, f.root, max_file_bytes)
    if reason is not None:
        return reason, ""
    return classify_text(data)


def _scan(batch: list[FileDoc]) -> list[str | None]:
    assert _JOB is not None
    return [_read(f, _JOB.max_file_bytes)[0] for f in batch]


def _chunk(task: tuple[str, int, int, list[Item]]) -> dict[str, int]:
    """Build one chunk and write it as ``SPLIT/INDEX.arrow``; returns its counts."""
    split, index, seed, items = task
    job = _JOB
    assert job is not None
    docs: list[CodeDoc] = []
    for item in items:
        if isinstance(item, CodeDoc):
            docs.append(item)
            continue
        reason, text = _read(item, job.max_file_bytes)
        if reason is None:
            docs.append(CodeDoc(text, item.path, item.repo))
    seqs, counts = build_fim(docs, job.tokenizer, job.fim, job.max_length, seed)
    if job.packing:
        ds, rows = pack(seqs, job.max_length, seed)
    else:
        ds, rows = unpacked(seqs), len(seqs)
    write_table(Path(job.staging), split, index, ds.data.table)
    out = {k: int(counts[k]) for k in ("psm", "spm", "plain", "fallback", "windows")}
    out.update(examples=len(docs), changed=len(items) - len(docs), rows=rows, tokens=int(len(seqs.ids)),
               trained_tokens=int((seqs.labels != IGNORE).sum()))
    return out


@contextlib.contextmanager
def _workers(num_proc: int | None, job: _Job) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """``map`` over ``num_proc`` forked worker processes (in this process when 1 or unset)."""
    if not num_proc or num_proc <= 1:
        _init(job)
        try:
            yield map
        finally:
            _init(None)  # type: ignore[arg-type]
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_init, initargs=(job,)) as pool:
        yield pool.map


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of a split seeded ``seed`` (see module doc)."""
    return seed if index == 0 else int(np.random.SeedSequence([abs(seed), index]).generate_state(1)[0])


def chunks(items: list[Item], limit: int | None = None) -> list[list[Item]]:
    """Consecutive runs of items of at most ``limit`` bytes (default :data:`CHUNK_BYTES`; a larger item alone)."""
    limit = CHUNK_BYTES if limit is None else limit
    out: list[list[Item]] = []
    current: list[Item] = []
    size = 0
    for item in items:
        n = item.size if isinstance(item, FileDoc) else len(item.text)
        if current and size + n > limit:
            out.append(current)
            current, size = [], 0
        current.append(item)
        size += n
    if current:
        out.append(current)
    return out


def _list(recipe: Recipe, value: str | list[str], key: str, stats: DataStats,
          run: Callable[[Callable, Iterable], Iterator], progress: Progress) -> list[Item]:
    """The documents of ``value`` in order (steps 1 and 2 of the module doc), skips counted in ``stats``."""
    d = recipe.data
    items: list[Item] = []
    for src in resolve_sources(value, key):
        if src.kind == "code":
            root = Path(src.path)
            files = []
            listing = FolderScan()  # folders that cannot be listed, symlinked folders
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
            skipped: Counter = Counter(listing.skipped)
            examples: dict[str, list[str]] = {k: list(v) for k, v in listing.examples.items()}
            for batch, reasons in zip(batches, run(_scan, batches), strict=True):
                for f, reason in zip(batch, reasons, strict=True):
                    if reason is None:
                        kept.append(f)
                        continue
                    skipped[reason] += 1
                    if len(examples.setdefault(reason, [])) < 3:
                        examples[reason].append(f.rel)
                if advance is not None:
                    advance(len(batch))
            for reason, n in skipped.items():
                stats.skipped[reason] = stats.skipped.get(reason, 0) + n
                (log.warning if reason in WARN_REASONS else log.info)("%s: skipped %d %s file(s), e.g. %s", root, n, reason, ", ".join(examples[reason]))
            if not kept:
                raise DataError(f"{key}: no code files read from {root}",
                                hint=f"data.include is {d.include}, data.exclude is {d.exclude}; "
                                f"skipped: {dict(skipped) or 'none'}")
            if d.fim.repo_context:
                kept.sort(key=lambda f: (f.repo or "", f.path))
            items.extend(kept)
            continue
        items.extend(record_docs(recipe, src, key, stats))
    stats.skipped_files = sum(stats.skipped.values())
    return items


def build_fim_prepared(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, staging: Path,
                       progress: Progress) -> DataStats:
    """Write the fim rows of ``recipe`` to ``staging/{train,eval}/*.arrow``; returns the statistics."""
    d = recipe.data
    stats = DataStats(task="fim", max_length=d.max_length, packing=d.packing)
    job = _Job(tokenizer, d.fim, d.max_length, d.packing, d.max_file_bytes, str(staging))
    with _workers(d.num_proc, job) as run:
        train = _list(recipe, d.train, "data.train", stats, run, progress)
        evaluation: list[Item] | None = None
        if isinstance(d.eval, float):
            train, evaluation = split_documents(train, d.eval, recipe.train.seed, by_repo=d.fim.repo_context)
        elif d.eval is not None:
            evaluation = _list(recipe, d.eval, "data.eval", stats, run, progress)
        for name, items, seed in (("train", train, recipe.train.seed), ("eval", evaluation, recipe.train.seed + 1)):
            if items is None:
                continue
            parts = chunks(items)
            advance = progress.task(f"FIM {name}", total=len(parts))
            tasks = [(name, c, chunk_seed(seed, c), part) for c, part in enumerate(parts)]
            total: Counter = Counter()
            for counts in run(_chunk, tasks):
                total.update(counts)
                if advance is not None:
                    advance(1)
            if total["changed"]:
                log.warning("data: %d file(s) changed while being read and were left out", total["changed"])
            split = SplitStats(examples=total["examples"], windows=total["windows"], tokens=total["tokens"],
                               trained_tokens=total["trained_tokens"], rows=total["rows"],
                               packing_efficiency=total["tokens"] / max(1, total["rows"] * d.max_length))
            if name == "train":
                for field, value in split.to_dict().items():
                    setattr(stats, field, value)
                stats.fim = {k: int(total[k]) for k in ("psm", "spm", "plain", "fallback")}
            else:
                stats.eval = split
    return stats
