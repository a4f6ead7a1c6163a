"""The content key of a recipe's prepared data: a hash of everything that determines the rows.

    key = sha256( format version, the data code,
                  task, recipe.data (less cache_dir, num_proc and the source/template names),
                  train.seed, model.num_labels,
                  the instruct template's text,
                  the tokenizer's files (name and sha256 of each, see below),
                  every source file: (path, size, modification time in ns) )[:24]

The tokenizer counts by its files, not by a loaded object, so the key can be computed without importing
transformers (:mod:`sc2tune.data.lookup`, a cache hit in about a second): the files of
:data:`TOKENIZER_FILES` that exist in the folder ``model.name_or_path`` names, in the bundled tokenizer
folder for the built-in model, or in the hub cache (``huggingface_hub``'s cache lookup at
``model.revision``) for a hub id. sc2tune's own pad-token rule (``modeling.set_pad_token``) is part of the
code hash. A tokenizer object that is not what those files load (``build_datasets`` given another one)
is told apart by :mod:`sc2tune.data.prepare`, which then adds the object's fingerprint to the key.

Source files are the files the recipe's ``data.train`` / ``data.eval`` resolve to: each file of a
folder of code that passes ``data.include`` / ``data.exclude``, each JSONL/JSON/CSV/Parquet file, every
file of a ``save_to_disk`` folder; a hub dataset counts by its id and split. Touching, editing, adding
or removing one of them gives a new key; so does any other tokenizer, a changed data key, another seed
or another version of the data code (``sc2tune/data/*.py``, hashed, so an edited builder never reads rows
an older one wrote). ``data.num_proc`` and ``data.cache_dir`` do not change the rows, so not the key.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.data.code_folder import list_files
from sc2tune.data.sources import resolve_sources
from sc2tune.recipe import TINY_MODEL, ModelSpec, Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: Bump when the on-disk layout of a prepared folder changes.
FORMAT_VERSION = 1
_IGNORED = {"cache_dir", "num_proc", "max_record_bytes"}  # max_record_bytes only refuses: rows are the same


#: The files of a tokenizer folder that determine the loaded tokenizer (those present are hashed).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")
#: The bundled StarCoder2 tokenizer the built-in model uses (``sc2tune.tiny.TOKENIZER_DIR``; not imported
#: from there, which would import torch).
BUNDLED_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tokenizer"


def _pad_rule() -> str:
    """The source of ``modeling.set_pad_token`` and ``PAD_TOKEN`` (read, not imported: modeling imports torch)."""
    source = (Path(__file__).resolve().parents[1] / "modeling.py").read_text(encoding="utf-8")
    parts = []
    for node in ast.parse(source).body:
        rule = isinstance(node, ast.FunctionDef) and node.name == "set_pad_token"
        pad = isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAD_TOKEN" for t in node.targets)
        if rule or pad:
            parts.append(ast.get_source_segment(source, node) or "")
    return "\n".join(parts)


def _code_hash() -> str:
    """sha256 of the data package's own source (what turns inputs into rows) and the pad-token rule."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    digest.update(b"pad\0" + _pad_rule().encode())
    return digest.hexdigest()


def _tokenizer_folder(spec: ModelSpec) -> tuple[Path | None, str | None]:
    """(local folder, None) or (None, hub id) where ``spec``'s tokenizer files are."""
    if spec.name_or_path == TINY_MODEL:
        return BUNDLED_TOKENIZER, None
    path = Path(spec.name_or_path).expanduser()
    if path.is_dir():
        return path, None
    return None, spec.name_or_path


def tokenizer_files(spec: ModelSpec) -> list[list[str]] | None:
    """[name, sha256] of each tokenizer file of ``spec`` (see module doc); None when none can be found
    without downloading (a hub id not in the local cache)."""
    folder, hub_id = _tokenizer_folder(spec)
    found: list[tuple[str, Path]] = []
    if folder is not None:
        found = [(name, folder / name) for name in TOKENIZER_FILES if (folder / name).is_file()]
    else:
        from huggingface_hub import try_to_load_from_cache

        for name in TOKENIZER_FILES:
            try:
                hit = try_to_load_from_cache(hub_id, name, revision=spec.revision)
            except Exception:  # noqa: BLE001 - an id the hub library rejects: no files
                return None
            if isinstance(hit, str):
                found.append((name, Path(hit)))
    if not found:
        return None
    return [[name, hashlib.sha256(path.read_bytes()).hexdigest()] for name, path in found]


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's full serialisation (vocabulary, merges, normaliser, special tokens)."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:  # a slow tokenizer: its vocabulary stands for it
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps([str(tokenizer.special_tokens_map), tokenizer.pad_token_id,
                              tokenizer.eos_token_id, len(tokenizer)]).encode())
    return digest.hexdigest()


def _stat(path: Path) -> list[Any]:
    try:
        st = path.stat()
    except OSError:  # gone, or a broken link: counted as such (the build skips it as unreadable)
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def source_files(recipe: Recipe, value: str | list[str], key: str) -> list[list[Any]]:
    """(path, size, mtime_ns) of every file a data.train / data.eval value resolves to (see module doc)."""
    d = recipe.data
    out: list[list[Any]] = []
    for src in resolve_sources(value, key):
        if src.kind == "hub":
            out.append(["hub", src.path, src.split])
        elif src.kind == "code":
            root = Path(src.path)
            out.append(["code", src.path])
            out.extend(_stat(root / rel) for rel in list_files(root, d.include, d.exclude))
        elif src.kind == "disk":
            out.extend(_stat(Path(dirpath) / name) for dirpath, _, names in sorted(os.walk(src.path))
                       for name in sorted(names))
        else:
            out.append(_stat(Path(src.path)))
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

        t = load_template(d.template)
        template = [f.name for f in dataclasses.fields(t) if f.name != "source"]
        template = {name: getattr(t, name) for name in template}
    data = {k: v for k, v in d.model_dump(mode="json").items() if k not in _IGNORED}
    # sources and template count by what they resolve to (files, text), not by how they are written:
    # `sc2tune data` given a relative path and `train` (which makes paths absolute) share one key
    del data["train"], data["template"]
    if isinstance(d.eval, (str, list)):
        del data["eval"]
    inputs: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "code": _code_hash(),
        "task": recipe.task,
        "data": data,
        "seed": recipe.train.seed,
        "num_labels": recipe.model.num_labels,
        "template": template,
        "tokenizer": tok,
        "train_files": source_files(recipe, d.train, "data.train"),
        "eval_files": None,
    }
    if isinstance(d.eval, (str, list)):
        inputs["eval_files"] = source_files(recipe, d.eval, "data.eval")
    return inputs


def data_key(inputs: dict[str, Any]) -> str:
    """The content key (24 hex digits) of :func:`key_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
