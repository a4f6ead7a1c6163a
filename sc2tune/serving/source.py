"""What ``sc2tune serve PATH`` serves: a GGUF file as it is, or a folder exported to one first; and the facts
the server needs from the file's metadata.

A folder (a run, a merged folder, an adapter or model folder) is exported by :mod:`sc2tune.export` to
``FOLDER/export/model-DTYPE.gguf`` and served from there; a later ``serve`` of the same folder reuses that file
while it is newer than every file of the folder outside ``export/`` (retraining or re-merging exports again).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sc2tune.errors import UserError
from sc2tune.serving.app import ModelFacts

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a file that starts with GGUF's magic bytes."""
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def cached_export(folder: Path, dtype: str) -> Path:
    """Where a folder's served GGUF lives: ``FOLDER/export/model-DTYPE.gguf``."""
    return folder / "export" / f"model-{dtype}.gguf"


def _newest_source_time(folder: Path) -> float:
    export = folder / "export"
    times = [p.stat().st_mtime for p in folder.rglob("*") if p.is_file() and export not in p.parents]
    return max(times, default=0.0)


def gguf_for(path: str | Path, *, dtype: str) -> Path:
    """The GGUF file to serve for ``path`` (module doc): the file itself, or the folder's (re)used export."""
    source = Path(path)
    if source.is_file():
        if not is_gguf(source):
            raise UserError(f"{source} is not a GGUF file (it does not start with 'GGUF')",
                            hint="give a .gguf file, or a run / merged folder to export first")
        return source
    if not source.is_dir():
        raise UserError(f"{source} does not exist", hint="give a .gguf file, or a run / merged folder")
    out = cached_export(source, dtype)
    if out.is_file() and out.stat().st_mtime >= _newest_source_time(source):
        log.info("serving %s (exported earlier from %s)", out, source)
        return out
    from sc2tune.export import export_gguf

    log.info("exporting %s to %s (%s) first", source, out, dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(export_gguf(source, out, dtype=dtype, force=True))


def read_facts(gguf_path: Path, *, alias: str | None, n_ctx: int) -> ModelFacts:
    """The served model's alias (default: the file's stem), context (``n_ctx``, or the model's own when 0)
    and whether its metadata holds a chat template, from the GGUF header."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(gguf_path).fields
    except (ValueError, OSError) as err:
        raise UserError(f"cannot read {gguf_path} as GGUF: {err}") from None
    arch = fields["general.architecture"].contents() if "general.architecture" in fields else None
    trained = fields.get(f"{arch}.context_length")
    own = int(trained.contents()) if trained is not None else None
    if n_ctx < 0:
        raise UserError(f"--n-ctx must be >= 0 (got {n_ctx}); 0 takes the model's own context length")
    context = n_ctx or own
    if context is None:
        raise UserError(f"{gguf_path} does not say its context length", hint="pass --n-ctx N")
    if own is not None and context > own:
        log.warning("--n-ctx %d is longer than the %d tokens %s was trained on", context, own, gguf_path.name)
    return ModelFacts(alias or gguf_path.stem, context, "tokenizer.chat_template" in fields)
