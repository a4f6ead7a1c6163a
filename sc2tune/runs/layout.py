"""The names of a trained folder's files and subfolders, which kind a folder is, and its small metadata files
read safely (no torch, transformers or peft at import): see :mod:`sc2tune.runs` for the layouts."""

from __future__ import annotations

import json
import logging
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sc2tune.errors import RecipeError, UserError
from sc2tune.recipe import Recipe, load_recipe

RECIPE_FILE = "recipe.yaml"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
TOKENIZER_CONFIG = "tokenizer_config.json"
LABELS_FILE = "labels.json"
CLASSIFIER_DIR = "classifier"  # a classifier adapter's base config with its head (training.portable)
RUN_ADAPTER, RUN_FULL, RUN_MERGED, RUN_CHECKPOINTS = "adapter", "model", "merged", "checkpoints"
#: The file every ``sc2tune train`` creates first in its output_dir (and keeps): the run's lock, and its mark.
RUN_LOCK = ".sc2tune-train.lock"
LOSS_PLOT = "loss.png"  # train and eval loss curves of a run, and of an eval report
CHECKPOINT_STAGING = ".staging"  # checkpoints/.staging/checkpoint-N: a checkpoint being written
INITIAL_ADAPTER = "initial_adapter"  # PiSSA/OLoRA starting factors (PEFT's temporary adapter name too)


class _At:
    """A path of a run folder, ``root / *parts`` (a descriptor: ``RunFolder(root).metrics`` is a Path)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __get__(self, run: RunFolder | None, owner: type | None = None) -> Path:
        assert run is not None, "a path of a RunFolder instance"
        return run.root.joinpath(*self.parts)


@dataclass(frozen=True)
class RunFolder:
    """Every path of a run folder, ``output_dir`` of ``sc2tune train`` (other layouts: :mod:`sc2tune.runs`)::

        adapter/ | model/          the PEFT adapter (adapter_config.json names the base), tokenizer,
                                   recipe.yaml, labels.json; model/ for adapter.method: full (:meth:`trained`)
        .adapter.staging/ | ...    the trained folder while it is written (:meth:`trained_staging`)
        merged/                    ``sc2tune merge``'s default output
        checkpoints/checkpoint-N/  transformers' checkpoints, each written in checkpoints/.staging/ and
                                   renamed into place when complete and flushed
        metrics.jsonl              one JSON object per logged step ({"step", "loss", ...}) and per evaluation
        summary.json               final eval metrics, throughput, steps, skipped steps, data statistics
        data.json                  the prepared data the run trains on (--resume reads it, never rebuilds)
        recipe.yaml                the resolved recipe
        loss.png, tensorboard/     train and eval loss curves; TensorBoard events (train.report_to)
        trackers.json              the wandb / mlflow / trackio runs it logged to (training.trackers)
        engine/rank-N.json         per process: the engine accelerate ran, what this rank's optimizer holds
        .sc2tune-train.lock        the run's lock, written first and kept: its mark (:func:`is_run_folder`)
        .sc2tune-init/initial_adapter/  PiSSA/OLoRA starting factors (written once, kept across resumes)
        eval/                      ``sc2tune eval RUN``'s report, unless --out says otherwise
    """

    root: Path

    adapter = _At(RUN_ADAPTER)
    full = _At(RUN_FULL)
    merged = _At(RUN_MERGED)
    checkpoints = _At(RUN_CHECKPOINTS)
    checkpoint_staging = _At(RUN_CHECKPOINTS, CHECKPOINT_STAGING)  # transformers writes checkpoint-N here first
    metrics = _At("metrics.jsonl")
    summary = _At("summary.json")
    data_record = _At("data.json")
    recipe = _At(RECIPE_FILE)
    lock = _At(RUN_LOCK)
    loss_plot = _At(LOSS_PLOT)
    tensorboard = _At("tensorboard")
    trackers = _At("trackers.json")
    engine = _At("engine")
    initial_adapter = _At(".sc2tune-init", INITIAL_ADAPTER)
    eval_report = _At("eval")

    def trained(self, method: str) -> Path:
        """``model/`` for a full fine-tune (``adapter.method: full``), else ``adapter/``."""
        return self.root / (RUN_FULL if method == "full" else RUN_ADAPTER)

    def trained_staging(self, method: str) -> Path:
        """Where :meth:`trained` is written before it is renamed into place (``.adapter.staging``)."""
        return self.root / f".{self.trained(method).name}.staging"

    def checkpoint(self, step: int) -> Path:
        """``checkpoints/checkpoint-{step}``."""
        return self.checkpoints / f"checkpoint-{step}"  # transformers' name

    def rank_record(self, process_index: int) -> Path:
        """``engine/rank-{process_index}.json``."""
        return self.engine / f"rank-{process_index}.json"


#: Largest metadata file read (recipe, adapter config, labels): real ones are a few kB.
MAX_METADATA_BYTES = 16 << 20

Kind = Literal["run", "adapter", "model"]

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---- layout ----------------------------------------------------------------------------------------


def _looks_adapter(folder: Path) -> bool:
    return any((folder / name).exists() for name in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS))


def _looks_model(folder: Path) -> bool:
    return (folder / MODEL_CONFIG).exists() and not _looks_adapter(folder)


def has_tokenizer(folder: Path) -> bool:
    """True when ``folder`` holds tokenizer files."""
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def folder_kind(path: str | Path) -> Kind | None:
    """``adapter`` (adapter_config.json or adapter weights), ``model`` (config.json), ``run`` (``adapter/`` or
    ``model/`` inside), or None for anything else (a missing folder, an empty one, a file)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    if _looks_adapter(folder):
        return "adapter"
    if _looks_model(folder):
        return "model"
    if _looks_adapter(folder / RUN_ADAPTER) or _looks_model(folder / RUN_FULL):
        return "run"
    return None


def is_run_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder ``sc2tune train`` wrote: it holds :data:`RUN_LOCK` (the first thing every
    run since the lock was introduced writes, kept afterwards), or a ``recipe.yaml`` beside ``adapter/``,
    ``model/`` or ``checkpoints/`` (a run copied without its hidden files, or an older one). A folder without
    these (a user's project, even with a ``data.json`` or ``summary.json`` of its own) is not one."""
    folder = Path(path)
    if not folder.is_dir():
        return False
    if (folder / RUN_LOCK).is_file():
        return True
    return (folder / RECIPE_FILE).is_file() and any(
        (folder / name).is_dir() for name in (RUN_ADAPTER, RUN_FULL, RUN_CHECKPOINTS))


def read_metadata_text(file: Path, *, limit: int = MAX_METADATA_BYTES) -> str:
    """Text of a small metadata file: a regular file (a symlink is followed to one) of at most ``limit``
    bytes, UTF-8; anything else (a FIFO, a device, a folder, a huge or binary file) is a UserError."""
    fix = "replace it with the file sc2tune or PEFT wrote, or remove it"
    try:
        info = file.stat()
    except OSError as err:
        raise UserError(f"{file}: cannot read it ({err.strerror})", hint=fix) from None
    link = " (a symlink)" if file.is_symlink() else ""
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{file}{link}: not a regular file", hint=fix)
    if info.st_size > limit:
        raise UserError(f"{file}{link}: {info.st_size:,} bytes, more than a metadata file holds "
                        f"({limit >> 20} MB at most)", hint=fix)
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{file}{link}: cannot read it as UTF-8 text ({err})", hint=fix) from None


def read_json_object(file: Path) -> dict[str, Any]:
    """A metadata file holding one JSON object (``adapter_config.json``, ``labels.json``, ``config.json``)."""
    text = read_metadata_text(file)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{file}: not JSON ({err})",
                        hint="replace it with the file sc2tune or PEFT wrote") from None
    if not isinstance(data, dict):
        raise UserError(f"{file}: expected a JSON object, found {type(data).__name__}",
                        hint="replace it with the file sc2tune or PEFT wrote")
    return data


def read_adapter_json(folder: Path) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT wrote it (a dict of its keys), with an error naming the fix."""
    if not folder.is_dir():
        raise UserError(f"adapter folder not found: {folder}")
    file = folder / ADAPTER_CONFIG
    if not file.exists() and not file.is_symlink():
        raise UserError(f"{folder} is not a PEFT adapter folder: it has no {ADAPTER_CONFIG}",
                        hint="point at the folder save_pretrained wrote (sc2tune: OUTPUT_DIR/adapter)")
    config = read_json_object(file)
    if not isinstance(config.get("peft_type"), str):
        raise UserError(f"{file}: no peft_type (e.g. \"LORA\"), so this is not a PEFT adapter config",
                        hint="replace it with the adapter_config.json PEFT's save_pretrained wrote")
    return config


def read_saved_recipe(folder: Path, overrides: Sequence[str] = ()) -> Recipe | None:
    """The recipe saved in ``folder`` (``recipe.yaml``) as a validated :class:`Recipe`, None when absent.

    Read by :func:`~sc2tune.recipe.load_recipe`: a file that is not a recipe is a RecipeError naming it, and
    ``model.trust_remote_code: true`` is refused unless ``overrides`` (the command line) confirm it.
    """
    file = folder / RECIPE_FILE
    if not file.exists() and not file.is_symlink():
        return None
    read_metadata_text(file)  # a regular, small file before the YAML parser sees it
    try:
        return load_recipe(file, list(overrides))
    except RecipeError as err:
        if err.hint:
            raise
        raise RecipeError(str(err), hint=f"{file} is the recipe sc2tune saved with the run: restore it from the "
                          "recipe you trained with, or remove it to use the folder without one") from None


def read_labels(folder: Path) -> dict[int, str] | None:
    """Class names saved with a classifier: ``labels.json`` (a list, ``{id: name}`` or ``{"id2label": ...}``),
    else the ``id2label`` of ``classifier/config.json`` or of a ``config.json`` beside an adapter."""
    for file, key in ((folder / LABELS_FILE, None), (folder / CLASSIFIER_DIR / MODEL_CONFIG, "id2label"),
                      (folder / MODEL_CONFIG, "id2label")):
        if not file.exists():
            continue
        text = read_metadata_text(file)
        try:
            data: Any = json.loads(text)
        except ValueError as err:
            raise UserError(f"{file}: cannot read it as JSON ({err})") from None
        if isinstance(data, dict):
            data = data.get(key or "id2label", data if key is None else None)
        if isinstance(data, list):
            return {i: str(v) for i, v in enumerate(data)}
        if isinstance(data, dict):
            try:
                return {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise UserError(f"{file}: label ids must be integers") from None
    return None


#: What a hub base's snapshot holds: config, weights, tokenizer files; its Python files only when trusted.
HUB_PATTERNS = ("*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model")
HUB_CODE_PATTERNS = ("*.py",)


def resolve_base(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False) -> Path:
    """A local folder for a base model: the built-in tiny model, a local path, or a hub snapshot.

    Hub ids are fetched with ``huggingface_hub.snapshot_download`` (config, safetensors, tokenizer files
    only: :data:`HUB_PATTERNS`), plus the model's own Python files (``*.py``, the code a config's ``auto_map``
    names) only when the caller ``trust_remote_code``; any failure is a :class:`UserError` that says to pass
    ``--base`` with a local copy.
    """
    from sc2tune.hub import ensure_hub_reachable
    from sc2tune.modeling import resolve_model_path

    local = Path(resolve_model_path(name_or_path)).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise UserError(f"base model '{name_or_path}' is a file, not a model folder")
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith((".", "/", "~")):
        raise UserError(f"base model folder not found: {name_or_path}",
                        hint="pass --base with the folder (config.json + *.safetensors) or a hub id")
    ensure_hub_reachable(name_or_path, "base model")
    try:
        from huggingface_hub import snapshot_download

        fetched = snapshot_download(
            name_or_path, revision=revision,
            allow_patterns=[*HUB_PATTERNS, *(HUB_CODE_PATTERNS if trust_remote_code else ())],
        )
    except Exception as err:  # offline, gated, missing repo: all user-fixable
        raise UserError(
            f"base model '{name_or_path}' is neither a local folder nor a hub repository I can fetch ({err})",
            hint="pass --base with a local copy of the base checkpoint",
        ) from None
    return Path(fetched)

