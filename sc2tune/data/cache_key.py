"""The content key of a recipe's prepared data: a hash of everything that determines the rows.

    key = sha256( format version, the data code,
                  task, recipe.data (less cache_dir, num_proc and the source/template names),
                  train.seed, model.num_labels,
                  the instruct template's text,
                  the tokenizer (its full serialisation, special tokens, pad token),
                  every source file: (path, size, modification time in ns) )[:24]

Source files are the files the recipe's ``data.train`` / ``data.eval`` resolve to: each file of a
folder of code that passes ``data.include`` / ``data.exclude``, each JSONL/JSON/CSV/Parquet file, every
file of a ``save_to_disk`` folder; a hub dataset counts by its id and split. Touching, editing, adding
or removing one of them gives a new key; so does any other tokenizer, a changed data key, another seed
or another version of the data code (``sc2tune/data/*.py``, hashed, so an edited builder never reads rows
an older one wrote). ``data.num_proc`` and ``data.cache_dir`` do not change the rows, so not the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from sc2tune.data.code_folder import list_files
from sc2tune.data.sources import resolve_sources
from sc2tune.recipe import Recipe

#: Bump when the on-disk layout of a prepared folder changes.
FORMAT_VERSION = 1
_IGNORED = {"cache_dir", "num_proc"}


def _code_hash() -> str:
    """sha256 of the data package's own source (what turns inputs into rows)."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


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


def key_inputs(recipe: Recipe, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Everything the key hashes, as a JSON-ready mapping (kept in the prepared folder's meta.json)."""
    d = recipe.data
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
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "train_files": source_files(recipe, d.train, "data.train"),
        "eval_files": None,
    }
    if isinstance(d.eval, (str, list)):
        inputs["eval_files"] = source_files(recipe, d.eval, "data.eval")
    return inputs


def data_key(inputs: dict[str, Any]) -> str:
    """The content key (24 hex digits) of :func:`key_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:24]
