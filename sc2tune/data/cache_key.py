"""The content key of a recipe's prepared data: a hash of everything that determines the rows.

    key = sha256( format version, the row-shaping code, the versions of the libraries that shape rows,
                  task, recipe.data (less cache_dir, num_proc, cache_lock_timeout and the source/template names),
                  train.seed, model.num_labels,
                  the instruct template's text,
                  the tokenizer's files (name and sha256 of each, see below),
                  every source file: its identity (see below) )[:24]

The tokenizer counts by its files, not by a loaded object, so the key can be computed without importing
transformers (:mod:`sc2tune.data.lookup`, a cache hit in about a second): the files of
:data:`TOKENIZER_FILES` that exist in the folder ``model.name_or_path`` names, in the bundled tokenizer
folder for the built-in model, or in the hub cache (``huggingface_hub``'s cache lookup at
``model.revision``) for a hub id. A tokenizer object that is not what those files load (``build_datasets``
given another one) is told apart by :mod:`sc2tune.data.prepare`, which then adds the object's fingerprint
to the key.

Row-shaping code: the data package's own source (``sc2tune/data/*.py``), and outside it the definitions
rows depend on (:data:`ROW_CODE`: :mod:`sc2tune.tokens`, the pad-token rule and the special-token lookup), so
an edited builder never reads rows an older one wrote. Library versions (:data:`ROW_LIBRARIES`: transformers
and tokenizers tokenise, numpy draws the FIM and packing choices, datasets writes the Arrow files) count
by their installed version (``importlib.metadata``, nothing imported).

Source files are the files the recipe's ``data.train`` / ``data.eval`` resolve to: each file of a
folder of code that passes ``data.include`` / ``data.exclude``, each JSONL/JSON/CSV/Parquet file, every
file of a ``save_to_disk`` folder. A file's identity (:func:`file_identity`) depends on ``data.cache_check``:

* ``stat`` (default): path, size, modification time (ns), inode and status-change time (ctime, ns) -
  no file is read. An edit that restores the size and the modification time (``touch -r``, ``os.utime``)
  still moves the ctime, which no user can set back; a copy or a checkout gives new inodes. What stat
  cannot see: a file system that does not keep ctime/inodes (some network and FUSE mounts);
* ``content``: path and sha256 of the file's bytes (every file read at each key computation: about a
  second per few hundred MB), for such file systems or any doubt.

A hub dataset (``hub:OWNER/NAME[:SPLIT][@REVISION]``) counts by its id, split and revision: a commit
given after ``@`` as itself, else the commit the revision (default ``main``) resolves to in the local hub
cache (``datasets--OWNER--NAME/refs/REVISION``, what ``datasets.load_dataset`` reads offline), else
``REVISION@unresolved`` (never downloaded: its first build counts as such; once downloaded the key names
the commit, so a dataset updated on the hub and fetched again gets a new key). Touching, editing, adding
or removing a source file gives a new key; so does any other tokenizer, a changed data key, another seed,
other row-shaping code or another library version. ``data.num_proc``, ``data.cache_dir`` and
``data.cache_lock_timeout`` do not change the rows, so not the key.

The prepared rows of task fim are also keyed per chunk of files (:func:`chunk_key`,
:mod:`sc2tune.data.chunked`): an edit to one file rebuilds only the chunk that holds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.data.code_folder import list_files
from sc2tune.data.integrity import sha256_file
from sc2tune.data.sources import resolve_sources
from sc2tune.recipe import TINY_MODEL, ModelSpec, Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Bump when the on-disk layout of a prepared folder changes.
FORMAT_VERSION = 2
# max_record_bytes only refuses and cache_lock_timeout only waits: rows are the same
_IGNORED = {"cache_dir", "num_proc", "cache_lock_timeout", "max_record_bytes"}


#: The files of a tokenizer folder that determine the loaded tokenizer (those present are hashed).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
#: The bundled StarCoder2 tokenizer the built-in model uses (``sc2tune.tiny.TOKENIZER_DIR``; not imported
#: from there, which would import torch).
BUNDLED_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"


#: sc2tune modules outside ``sc2tune/data`` whose source shapes rows (the pad-token rule, the special-token lookup).
ROW_CODE = ("tokens.py",)
#: Installed distributions whose version is part of the key (module doc).
ROW_LIBRARIES = ("transformers", "tokenizers", "numpy", "datasets")
_PACKAGE = Path(__file__).resolve().parents[1]


def _code_hash() -> str:
    """sha256 of the data package's own source and of the row-shaping code outside it (module doc)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for module in ROW_CODE:
        digest.update(module.encode() + b"\0" + (_PACKAGE / module).read_bytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Installed version of each of :data:`ROW_LIBRARIES` (all installed with sc2tune: dependencies of it or of
    transformers)."""
    from importlib.metadata import version

    return {name: version(name) for name in ROW_LIBRARIES}


def tokenizer_folder(spec: ModelSpec) -> Path | str:
    """Where ``spec``'s tokenizer files are: a local folder (a Path), or a hub id (a str)."""
    if spec.name_or_path == TINY_MODEL:
        return BUNDLED_TOKENIZER
    path = Path(spec.name_or_path).expanduser()
    return path if path.is_dir() else spec.name_or_path


def tokenizer_files(spec: ModelSpec) -> list[list[str]] | None:
    """[name, sha256] of each tokenizer file of ``spec`` (see module doc); None when none can be found
    without downloading (a hub id not in the local cache)."""
    where = tokenizer_folder(spec)
    found: list[tuple[str, Path]] = []
    if isinstance(where, Path):
        found = [(name, where / name) for name in TOKENIZER_FILES if (where / name).is_file()]
    else:
        from huggingface_hub import try_to_load_from_cache

        for name in TOKENIZER_FILES:
            try:
                hit = try_to_load_from_cache(where, name, revision=spec.revision)
            except Exception:  # noqa: BLE001 - an id the hub library rejects: no files
                return None
            if isinstance(hit, str):
                found.append((name, Path(hit)))
    if not found:
        return None
    return [[name, hashlib.sha256(path.read_bytes()).hexdigest()] for name, path in found]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's full serialisation (vocabulary, merges, normaliser, special tokens), less its
    ``padding`` and ``truncation`` settings: transformers sets those on the backend at each call (a padded
    batch leaves them on), and every encoding of the data pipeline names its own."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        padding, truncation = backend.padding, backend.truncation
        try:  # serialised as if never padded or truncated (the common case: nothing to switch off)
            if padding is not None:
                backend.no_padding()
            if truncation is not None:
                backend.no_truncation()
            digest.update(backend.to_str().encode())
        finally:
            if padding is not None:
                backend.enable_padding(**padding)
            if truncation is not None:
                backend.enable_truncation(**truncation)
    else:  # a slow tokenizer: its vocabulary stands for it
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps([str(tokenizer.special_tokens_map), tokenizer.pad_token_id,
                              tokenizer.eos_token_id, len(tokenizer)]).encode())
    return digest.hexdigest()


_DIGESTS: dict[tuple, str] = {}


def _content_digest(path: Path, st: os.stat_result) -> str:
    """sha256 of the file's bytes (memoised per process on its full stat, so one key computation and the
    chunk keys read each file once)."""
    memo = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    if memo not in _DIGESTS:
        _DIGESTS[memo] = sha256_file(path)
    return _DIGESTS[memo]


def file_identity(path: Path, check: str = "stat") -> list[Any]:
    """What the key sees of one source file (module doc): [path, size, mtime_ns, inode, ctime_ns] with
    ``check`` stat, [path, sha256] with content; [path, None, None] when it cannot be read (gone, a
    broken link: the build skips it as unreadable)."""
    try:
        st = path.stat()
        if check == "content":
            return [str(path), _content_digest(path, st)] if stat.S_ISREG(st.st_mode) else [str(path), None, None]
    except OSError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def hub_revision(dataset_id: str, revision: str | None = None) -> str:
    """The commit ``revision`` (default ``main``) of hub dataset ``dataset_id`` resolves to in the local hub
    cache; a commit given as such stands for itself (module doc)."""
    wanted = revision or "main"
    if len(wanted) == 40 and all(c in "0123456789abcdef" for c in wanted):
        return wanted
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"datasets--{dataset_id.replace('/', '--')}" / "refs" / wanted
        return ref.read_text(encoding="utf-8").strip() or f"{wanted}@unresolved"
    except (ImportError, OSError, UnicodeDecodeError):
        return f"{wanted}@unresolved"


def source_files(recipe: Recipe, value: str | list[str], key: str) -> list[list[Any]]:
    """The identity of every file a data.train / data.eval value resolves to (see module doc)."""
    d = recipe.data
    check = d.cache_check
    out: list[list[Any]] = []
    for src in resolve_sources(value, key):
        if src.kind == "hub":
            out.append(["hub", src.path, src.split, hub_revision(src.path, src.revision)])
        elif src.kind == "code":
            root = Path(src.path)
            out.append(["code", src.path])
            out.extend(file_identity(root / rel, check) for rel in list_files(root, d.include, d.exclude))
        elif src.kind == "disk":
            out.extend(file_identity(Path(dirpath) / name, check) for dirpath, _, names in sorted(os.walk(src.path))
                       for name in sorted(names))
        else:
            out.append(file_identity(Path(src.path), check))
    return out


def key_inputs(recipe: Recipe, tokenizer: PreTrainedTokenizerBase | None = None) -> dict[str, Any] | None:
    """Everything the key hashes, as a JSON-ready mapping (kept in the prepared folder's meta.json).

    The tokenizer counts by its files (module doc). When they cannot be found (a hub id outside the
    local cache) the fingerprint of ``tokenizer`` stands for them; without one the result is None."""
    d = recipe.data
    files = tokenizer_files(recipe.model)
    if files is None and tokenizer is None:
        return None
    tok: dict[str, Any] = ({"files": files, "revision": recipe.model.revision} if files is not None
                           else {"object": tokenizer_fingerprint(tokenizer)})
    template = None
    if recipe.task == "instruct":
        from sc2tune.data.templates import load_template

        template = dataclasses.asdict(load_template(d.template))
        del template["source"]  # where it was read from: its text counts, not its path
    data = {k: v for k, v in d.model_dump(mode="json").items() if k not in _IGNORED}
    # sources and template count by what they resolve to (files, text), not by how they are written:
    # `sc2tune data` given a relative path and `train` (which makes paths absolute) share one key
    del data["train"], data["template"]
    if isinstance(d.eval, (str, list)):
        del data["eval"]
    return {
        "format": FORMAT_VERSION,
        "code": _code_hash(),
        "libraries": library_versions(),
        "task": recipe.task,
        "data": data,
        "seed": recipe.train.seed,
        "num_labels": recipe.model.num_labels,
        "template": template,
        "tokenizer": tok,
        "train_files": source_files(recipe, d.train, "data.train"),
        "eval_files": source_files(recipe, d.eval, "data.eval") if isinstance(d.eval, (str, list)) else None,
    }


def data_key(inputs: dict[str, Any]) -> str:
    """The content key (24 hex digits) of :func:`key_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]


def chunk_key(inputs: dict[str, Any], seed: int, items: list[list[Any]]) -> str:
    """The key (24 hex digits) of one chunk of task fim: the set key's ``inputs`` less their file lists,
    the chunk's seed and the identity of each of its documents, in order (:mod:`sc2tune.data.chunked`)."""
    common = {k: v for k, v in inputs.items() if k not in ("train_files", "eval_files")}
    return hashlib.sha256(json.dumps(["chunk", common, seed, items], sort_keys=True).encode()).hexdigest()[:24]
