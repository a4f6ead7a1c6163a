"""The output folder: built beside its final place, published with one rename.

Layout of a merged folder (what ``save_pretrained`` writes, so plain transformers loads it)::

    config.json                   output config: dtype set, no quantization_config, id2label for classifiers
    generation_config.json        the base's, or one derived from the config
    model.safetensors             or model-0000i-of-0000N.safetensors + model.safetensors.index.json
    tokenizer.json, ...           the adapter folder's tokenizer if it has one, else the base's
    recipe.yaml                   the run's recipe when the adapter folder has one (instruction template)
    sc2tune_merge.json            provenance: adapter, base, dtype, round trip, verification figures

Atomicity: everything is written into ``.NAME.tmp-XXXX`` in the same parent folder, flushed to disk, then
renamed to ``NAME`` (the renames and flushes are :mod:`sc2tune.atomic`'s; the owner-file protocol below is the
merge's own, because a merge's leftovers are hours of work that are restored, not only removed). A crash or kill leaves only that hidden temporary folder (never a complete-looking ``NAME``);
an existing ``NAME`` is replaced only with ``overwrite``, only when it holds a previous model output
(``sc2tune_merge.json``, or ``config.json`` plus weights), and only once the new folder is complete. The rule
is checked before the merge and again at publishing: what appeared at ``NAME`` meanwhile and may not be
replaced stays, and the merge is kept beside it as ``NAME.merged-XXXX`` (the error says so).

Replacing ``NAME``: the previous folder gets an owner file too and is renamed to ``.NAME.old-XXXX``, the new one
is renamed to ``NAME``, then the old one is renamed ``.NAME.del-XXXX`` and deleted, its owner file last.

Leftovers: the hidden folders hold ``.sc2tune-merge-owner`` (``pid@host``) while they exist. The next merge
into the same parent, before it checks ``NAME``, tidies those whose owner file names a process of this host
that no longer runs (a killed merge): ``.NAME.tmp-*`` and ``.NAME.del-*`` are removed; ``.NAME.old-*`` is
renamed back to ``NAME`` when the kill came between the two renames (``NAME`` missing), else removed; an owner
file left inside ``NAME`` is deleted. Folders without an owner file, or of a live process or another host, are
left alone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from transformers import GenerationConfig, PretrainedConfig

from sc2tune.atomic import alive, fsync_tree, move, remove
from sc2tune.errors import UserError
from sc2tune.modeling import ModelSource, load_generation_config, load_tokenizer, tokenizer_names_own_code
from sc2tune.runs import MODEL_CONFIG, MODEL_WEIGHTS, RECIPE_FILE, has_tokenizer

log = logging.getLogger(__name__)

MARKER = "sc2tune_merge.json"  # provenance file every merged folder holds
OWNER = ".sc2tune-merge-owner"  # pid@host of the merge writing a temporary folder


def is_model_output(folder: Path) -> bool:
    """True when ``folder`` holds a previous model output: sc2tune's marker, or config.json plus weights."""
    if (folder / MARKER).is_file():
        return True
    return (folder / MODEL_CONFIG).is_file() and any((folder / name).is_file() for name in MODEL_WEIGHTS)


def check_out_dir(out: Path, *, overwrite: bool, inputs: list[Path]) -> None:
    """Refuse an existing output (without ``overwrite``) and any output that would clobber an input."""
    target = out.resolve()
    for path in inputs:
        src = path.resolve()
        if target == src or target in src.parents or src in target.parents:
            raise UserError(f"--out {out} overlaps the input folder {path}", hint="choose a separate folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is a file")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"--out {out} already exists", hint="choose a new folder or pass --overwrite")
        if not is_model_output(out):
            names = sorted(p.name for p in out.iterdir())
            shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
            raise UserError(
                f"--out {out} is not a model folder ({shown}); --overwrite only replaces a previous merge or "
                "model output (sc2tune_merge.json, or config.json with weights)",
                hint="choose a new folder, or empty this one yourself if its files can go",
            )
    parent = next((p for p in out.resolve().parents if p.exists()), None)
    if parent is None or not os.access(parent, os.W_OK):
        raise UserError(f"cannot create --out {out}: {parent} is not writable")


def _owner() -> str:
    return f"{os.getpid()}@{socket.gethostname()}"


def _dead_owner(folder: Path, host: str) -> int | None:
    """The pid in ``folder``'s owner file when it names a process of ``host`` that no longer runs."""
    owner = folder / OWNER
    if not folder.is_dir() or folder.is_symlink() or not owner.is_file():
        return None
    try:
        pid_text, _, owner_host = owner.read_text(encoding="utf-8").strip().partition("@")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    return None if owner_host != host or alive(pid) else pid


#: The hidden folders a merge makes beside ``NAME``: ``tmp`` (being written), ``old`` (the previous ``NAME``,
#: set aside while publishing), ``del`` (being deleted). The suffix is mkdtemp's (letters, digits, ``_``).
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old|del)-[a-z0-9_]+")


def _sibling(out: Path, kind: str, *, hidden: bool = True) -> Path:
    """A new, unused name beside ``out``: ``.NAME.KIND-XXXXXXXX`` (or ``NAME.KIND-XXXXXXXX``), not created."""
    made = Path(tempfile.mkdtemp(prefix=f"{'.' if hidden else ''}{out.name}.{kind}-", dir=out.parent))
    made.rmdir()
    return made


def _remove(folder: Path) -> None:
    """Delete a folder that holds the owner file, the owner file last: a kill part way leaves a folder that
    :func:`clean_stale` still recognises as a dead merge's."""
    for entry in folder.iterdir():
        if entry.name != OWNER:
            remove(entry)
    (folder / OWNER).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


def clean_stale(parent: Path) -> list[str]:
    """Tidy what killed merges left in ``parent`` (the rules: "Leftovers" in the module docstring); one line
    per folder removed or restored."""
    if not parent.is_dir():
        return []
    done: list[str] = []
    host = socket.gethostname()
    for folder in sorted(parent.iterdir()):
        match = _LEFTOVER.fullmatch(folder.name)
        pid = _dead_owner(folder, host)
        if pid is None:
            continue
        if match is None:  # a published folder the merge died in before removing its owner file
            if not folder.name.startswith("."):
                (folder / OWNER).unlink(missing_ok=True)
            continue
        kind, target = match["kind"], parent / match["name"]
        if kind == "old" and not target.exists():
            try:
                move(folder, target)
            except OSError:  # NAME appeared meanwhile: leave both for the next run
                continue
            (target / OWNER).unlink(missing_ok=True)
            done.append(f"restored {target}: an interrupted merge (pid {pid}) had set it aside")
            continue
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink()) / 1e9
        _remove(folder)
        what = {"tmp": "left by", "old": "the output replaced by", "del": "being deleted by"}[kind]
        done.append(f"removed {folder} ({size:.2f} GB), {what} an interrupted merge (pid {pid})")
    return done


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out``; removed if the block fails (the caller publishes on success)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    tmp.mkdir()  # the usual mode of a new folder (mkdtemp's would be private)
    (tmp / OWNER).write_text(_owner(), encoding="utf-8")
    try:
        yield tmp
    finally:
        if tmp.exists():
            _remove(tmp)


def _keep_aside(tmp: Path, out: Path, why: str) -> UserError:
    """``tmp`` renamed to a visible ``NAME.merged-*`` beside ``out`` (hours of merging are not thrown away), and
    the error that says why it was not published and where it is."""
    kept = _sibling(out, "merged", hidden=False)
    move(tmp, kept)
    (kept / OWNER).unlink(missing_ok=True)
    return UserError(f"--out {out} was not replaced: {why}", hint=f"the merged model is in {kept}; move it where "
                     "you want it")


def publish(tmp: Path, out: Path, *, overwrite: bool = False) -> None:
    """Move the finished ``tmp`` to ``out``, checking ``out`` again first: what appeared there while the merge
    ran is replaced only under the rules of :func:`check_out_dir` (``overwrite`` and a model output), else the
    merge is kept beside it and the error says where. An existing ``out`` is replaced as "Replacing ``NAME``"
    in the module docstring says; the owner files leave ``out`` last."""
    occupied = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if occupied and (not overwrite or not out.is_dir() or not is_model_output(out)):
        raise _keep_aside(tmp, out, "it appeared while the merge ran" + (
            "" if overwrite else " (pass --overwrite to replace a previous model output)"))
    fsync_tree(tmp)
    old = None
    if out.exists():
        old = _sibling(out, "old")
        (out / OWNER).write_text(_owner(), encoding="utf-8")
        move(out, old)
    try:
        move(tmp, out)
    except OSError as err:
        if old is None:
            raise _keep_aside(tmp, out, f"it could not be written ({err})") from None
        try:
            move(old, out)
        except OSError:  # another merge published NAME meanwhile
            raise _keep_aside(tmp, out, f"another merge published it at the same time; the output this merge "
                              f"found there is set aside in {old}") from None
        (out / OWNER).unlink(missing_ok=True)
        raise _keep_aside(tmp, out, f"it could not be written ({err})") from None
    (out / OWNER).unlink(missing_ok=True)
    if old is not None:
        doomed = old.with_name(old.name.replace(".old-", ".del-", 1))
        move(old, doomed)
        _remove(doomed)


def write_metadata(folder: Path, config: PretrainedConfig, *, base: ModelSource, adapter_dir: Path,
                   classifier: bool, provenance: dict[str, Any], chat_template: str | None = None) -> None:
    """Write config, generation config, tokenizer and provenance next to the weights, and the base's own
    Python files when its config names them (``auto_map``), and the tokenizer folder's when its tokenizer
    names them, so the folder loads as they do. A tokenizer from its own code is loaded (to copy it) only when
    ``base`` may run its code (without it such a tokenizer is a UserError; :func:`sc2tune.merging.merge` checks
    :func:`tokenizer_source` before streaming, so this is only a backstop). ``chat_template`` (an instruction
    run's, :mod:`sc2tune.data.chat_template`) goes into the tokenizer's config."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from sc2tune.tokens import set_pad_token

    base_dir = Path(base.name_or_path)
    tok_dir = tokenizer_source(adapter_dir, base_dir)
    tokenizer = None
    if tok_dir is not None:
        tokenizer = load_tokenizer(base.replace(name_or_path=str(tok_dir)), pad=False)
        with contextlib.suppress(UserError):
            set_pad_token(tokenizer)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(str(folder))
        if base.trust_remote_code and tokenizer_names_own_code(tok_dir):
            _copy_model_code(tok_dir, folder)
    else:
        log.warning("no tokenizer in %s or %s: the merged folder has none", adapter_dir, base_dir)
    if classifier and tokenizer is not None and tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    config.architectures = [auto._model_mapping[type(config)].__name__]  # what the model's save_pretrained writes
    config.save_pretrained(str(folder))
    if getattr(config, "auto_map", None):
        _copy_model_code(base_dir, folder)
    if not classifier:
        gen = load_generation_config(base_dir) or GenerationConfig.from_model_config(config)
        gen.save_pretrained(str(folder))
    if (adapter_dir / RECIPE_FILE).is_file():  # the run's recipe: generate finds its template here
        shutil.copyfile(adapter_dir / RECIPE_FILE, folder / RECIPE_FILE)
    write_provenance(folder, provenance)


def tokenizer_source(adapter_dir: Path, base_dir: Path) -> Path | None:
    """The folder whose tokenizer a merged folder gets: the adapter's when it has one, else the base's."""
    return next((d for d in (adapter_dir, base_dir) if has_tokenizer(d)), None)


def write_provenance(folder: Path, provenance: dict[str, Any]) -> None:
    """Write ``sc2tune_merge.json`` (again after verification added its figures)."""
    (folder / MARKER).write_text(json.dumps(provenance, indent=2, default=str) + "\n")


def _copy_model_code(source: Path, folder: Path) -> None:
    """``source``'s Python files (the code the base's config or the tokenizer's ``auto_map`` names) beside the
    merged weights, each unless already there (save_pretrained may have copied it); copied, not run."""
    for file in sorted(source.glob("*.py")):
        if file.is_file() and not (folder / file.name).exists():
            shutil.copyfile(file, folder / file.name)
