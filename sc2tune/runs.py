"""Trained folders: what a run, an adapter and a model folder hold, read into typed objects, and loaded.

Three layouts, told apart by their files (:func:`folder_kind`)::

    run folder (OUTPUT, written by ``sc2tune train``)
        adapter/          an adapter folder (below); ``model/`` instead for adapter.method: full
        merged/           a model folder, after ``sc2tune merge`` (optional)
        checkpoints/      checkpoint-N folders
        recipe.yaml       the resolved recipe (also inside adapter/ or model/)
        metrics.jsonl, summary.json, data.json, loss.png, tensorboard/

    adapter folder (PEFT ``save_pretrained`` plus what sc2tune adds)
        adapter_config.json                     PEFT's config (peft_type, r, base_model_name_or_path, ...)
        adapter_model.safetensors | .bin        the LoRA factors (and a classifier's ``score`` head)
        recipe.yaml                             the run's resolved recipe (optional)
        tokenizer.json, tokenizer_config.json   the tokenizer trained with (optional)
        labels.json                             {id: name} of a classifier (optional)
        classifier/config.json                  a classifier's base config with its head (training.portable)

    model folder (a base, a merged model or a full fine-tune: plain ``from_pretrained``)
        config.json, model.safetensors | model-0000i-of-0000N.safetensors + index, tokenizer (optional),
        recipe.yaml (optional: a merge copies the adapter's), sc2tune_merge.json (after a merge)

:func:`read_trained` returns a :class:`TrainedFolder` (the saved recipe as a :class:`~sc2tune.recipe.Recipe`
read by :func:`~sc2tune.recipe.load_recipe`, so a saved ``model.trust_remote_code: true`` is refused unless the
caller's overrides confirm it; the PEFT config as PEFT reads it). :func:`load_trained` loads its ``base``
(as trained: 4-bit for QLoRA), ``adapter`` (base + PEFT adapter, or the full fine-tune) or ``merged`` model
with its tokenizer. Metadata files are read only when they are regular files (a symlink is followed to one)
of at most :data:`MAX_METADATA_BYTES`; anything else is a :class:`~sc2tune.errors.UserError` naming the file.
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sc2tune.errors import RecipeError, UserError
from sc2tune.recipe import Dtype, ModelSpec, QuantSpec, Recipe, load_recipe

if TYPE_CHECKING:
    import torch
    from peft import PeftConfig

RECIPE_FILE = "recipe.yaml"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_CONFIG = "config.json"
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
LABELS_FILE = "labels.json"
CLASSIFIER_CONFIG = Path("classifier") / MODEL_CONFIG  # as training.portable writes it
RUN_ADAPTER, RUN_FULL, RUN_MERGED, RUN_CHECKPOINTS = "adapter", "model", "merged", "checkpoints"

#: Largest metadata file read (recipe, adapter config, labels): real ones are a few kB.
MAX_METADATA_BYTES = 16 << 20

Kind = Literal["run", "adapter", "model"]
Which = Literal["base", "adapter", "merged"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# ---- layout ----------------------------------------------------------------------------------------


def is_adapter_dir(path: str | Path) -> bool:
    """True when ``path`` is a folder with PEFT's ``adapter_config.json``."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


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
    for file, key in ((folder / LABELS_FILE, None), (folder / CLASSIFIER_CONFIG, "id2label"),
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


def resolve_base(name_or_path: str, *, revision: str | None = None) -> Path:
    """A local folder for a base model: the built-in tiny model, a local path, or a hub snapshot.

    Hub ids are fetched with ``huggingface_hub.snapshot_download`` (config, safetensors, tokenizer files
    only); any failure is a :class:`UserError` that says to pass ``--base`` with a local copy.
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
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.txt", "*.model"],
        )
    except Exception as err:  # offline, gated, missing repo: all user-fixable
        raise UserError(
            f"base model '{name_or_path}' is neither a local folder nor a hub repository I can fetch ({err})",
            hint="pass --base with a local copy of the base checkpoint",
        ) from None
    return Path(fetched)


# ---- the typed folder ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedFolder:
    """A run, adapter or model folder, read: where its parts are and what its metadata says.

    ``path`` is the folder as given (a hub id or the built-in model's name resolved to its local folder).
    """

    path: Path
    kind: Kind
    run_dir: Path | None  #: OUTPUT when the folder is (inside) a training run
    adapter_dir: Path | None  #: the PEFT adapter folder (OUTPUT/adapter, or ``path`` itself)
    full_dir: Path | None  #: OUTPUT/model of a full fine-tune
    merged_dir: Path | None  #: OUTPUT/merged when it holds a model, or ``path`` itself for a model folder
    recipe: Recipe | None  #: the saved recipe.yaml, validated
    adapter_config: PeftConfig | None  #: adapter_config.json as PEFT reads it
    labels: dict[int, str] | None  #: class names saved with a classifier adapter

    @property
    def trained_dir(self) -> Path:
        """The folder that holds what training produced: the adapter, the full model, or the model itself."""
        return self.adapter_dir or self.full_dir or self.merged_dir or self.path

    @property
    def base_name(self) -> str | None:
        """The base model: the adapter's ``base_model_name_or_path``, else the recipe's ``model.name_or_path``."""
        name = getattr(self.adapter_config, "base_model_name_or_path", None)
        if not name and self.recipe is not None:
            name = self.recipe.model.name_or_path
        return name or None

    @property
    def classifier(self) -> bool:
        """A sequence classifier: SEQ_CLS adapter, a classify recipe, or a model config naming a classifier head."""
        task_type = getattr(self.adapter_config, "task_type", None)
        if str(getattr(task_type, "value", task_type)) == "SEQ_CLS":
            return True
        if self.recipe is not None and self.recipe.task == "classify":
            return True
        if self.kind == "model":
            config = read_json_object(self.path / MODEL_CONFIG)
            return any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or [])
        return False

    @property
    def quantization(self) -> QuantSpec | None:
        """How the base was quantised in training (the recipe's ``adapter.quantization``; None without one)."""
        return None if self.recipe is None else self.recipe.adapter.quantization

    def base_dir(self) -> Path:
        """The base model's local folder (:func:`resolve_base`); a UserError when the folder names none."""
        name = self.base_name
        if not name:
            raise UserError(f"{self.trained_dir}: the adapter does not name its base model",
                            hint="merge it with --base first, or fix base_model_name_or_path in adapter_config.json")
        revision = self.recipe.model.revision if self.recipe is not None else None
        return resolve_base(str(name), revision=revision)


def _peft_config(folder: Path) -> PeftConfig:
    """PEFT's own reading of ``adapter_config.json`` (checked first to be a small JSON object with peft_type)."""
    from peft import PeftConfig

    read_adapter_json(folder)
    try:
        return PeftConfig.from_pretrained(str(folder))
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise UserError(f"{folder / ADAPTER_CONFIG}: PEFT cannot read it ({err})",
                        hint="replace it with the adapter_config.json PEFT's save_pretrained wrote") from None


def read_trained(path: str | Path, overrides: Sequence[str] = ()) -> TrainedFolder:
    """Read a run, adapter or model folder (or a base model's hub id / built-in name) into a TrainedFolder.

    The recipe is read before anything else, so a saved ``model.trust_remote_code`` not confirmed by
    ``overrides`` stops here. A run's recipe is ``adapter/recipe.yaml`` (``model/recipe.yaml``).
    """
    folder = Path(path)
    kind = folder_kind(folder)
    if kind is None:
        folder = _named_model(path)
        kind = "model"
    run_dir = adapter_dir = full_dir = merged_dir = None
    if kind == "run":
        run_dir = folder
        if _looks_adapter(folder / RUN_ADAPTER):
            adapter_dir = folder / RUN_ADAPTER
        else:
            full_dir = folder / RUN_FULL
    elif kind == "adapter":
        adapter_dir = folder
        run_dir = folder.parent if folder.name == RUN_ADAPTER else None
    elif folder.name == RUN_FULL and (folder / RECIPE_FILE).exists():  # a full fine-tune's OUTPUT/model
        run_dir, full_dir = folder.parent, folder
    else:
        merged_dir = folder
    if run_dir is not None and merged_dir is None and _looks_model(run_dir / RUN_MERGED):
        merged_dir = run_dir / RUN_MERGED
    trained = adapter_dir or full_dir or merged_dir or folder
    recipe = read_saved_recipe(trained, overrides)
    adapter_config = _peft_config(adapter_dir) if adapter_dir is not None else None
    labels = read_labels(adapter_dir) if adapter_dir is not None else None
    return TrainedFolder(folder, kind, run_dir, adapter_dir, full_dir, merged_dir, recipe, adapter_config, labels)


def _named_model(path: str | Path) -> Path:
    """A path that is no trained folder: a base model's hub id or built-in name, else a UserError."""
    folder = Path(path)
    if folder.is_dir():
        raise UserError(f"{path}: not a model, merged, adapter or run folder (no config.json, adapter_config.json, "
                        "adapter/ or model/ inside)",
                        hint="a model folder has config.json and *.safetensors; an adapter folder "
                        "adapter_config.json; a run folder adapter/")
    try:
        return resolve_base(str(path))
    except UserError:
        raise UserError(f"{path}: not a model, merged, adapter or run folder, nor a hub id I can fetch",
                        hint="a model folder has config.json and *.safetensors; an adapter folder "
                        "adapter_config.json") from None


# ---- loading ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No "Loading weights" bars or load reports from transformers inside sc2tune's own output (loading a
    classifier base for its adapter reports a "missing" score head that the adapter then supplies)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations PEFT triggers inside transformers
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_pretrained(folder: Path, *, classifier: bool, dtype: torch.dtype, device: str,
                    labels: dict[int, str] | None = None, pad_token_id: int | None = None,
                    quant: QuantSpec | None = None, spec: ModelSpec | None = None) -> Any:
    """``from_pretrained`` of a model folder in eval mode: causal LM or classifier (``labels`` give its head),
    ``quant`` 4/8-bit on ``device`` (with bitsandbytes' exact training kernel), else moved to ``device``.
    ``spec`` (the run's model section) adds its attention kernel and remote-code setting."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from sc2tune.modeling import keep_4bit_kernel_exact, quantization_config, resolve_attn

    kwargs: dict[str, Any] = {"dtype": dtype}
    if spec is not None:
        kwargs.update(attn_implementation=resolve_attn(spec), trust_remote_code=spec.trust_remote_code)
    if classifier and labels:
        kwargs.update(num_labels=len(labels), id2label=dict(labels), label2id={v: k for k, v in labels.items()})
    if quant is not None:
        kwargs["quantization_config"] = quantization_config(quant, dtype, skip=["score"] if classifier else None)
        kwargs["device_map"] = {"": device}
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    try:
        model = loader.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(f"{folder}: cannot load the model ({err})",
                        hint="a model folder has config.json and *.safetensors") from None
    if quant is None:
        model = model.to(device)
    else:
        keep_4bit_kernel_exact(model)  # the numbers the adapter was trained against
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = pad_token_id
    return model.eval()


def attach_adapter(base: Any, adapter_dir: Path) -> Any:
    """PEFT's ``PeftModel.from_pretrained(base, adapter_dir)``, for inference (eval mode)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).eval()


def score_rows(adapter_dir: Path) -> int:
    """Classes of a classifier adapter without saved labels: the rows of its saved ``score.weight``."""
    from safetensors import safe_open

    file = adapter_dir / ADAPTER_WEIGHTS[0]
    if file.is_file():
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open handles are not iterable
                if key.endswith("score.weight"):
                    return int(handle.get_slice(key).get_shape()[0])
    raise UserError(f"{adapter_dir}: cannot tell how many classes the classifier has",
                    hint="save labels.json beside the adapter")


def class_labels(folder: TrainedFolder) -> dict[int, str] | None:
    """A classifier adapter's labels: saved ones, else ``LABEL_i`` for the recipe's ``model.num_labels`` or the
    adapter's score rows; None without an adapter (a model's ``config.json`` names its classes)."""
    if folder.labels:
        return folder.labels
    if folder.adapter_dir is None:
        return None
    count = folder.recipe.model.num_labels if folder.recipe is not None else None
    return {i: f"LABEL_{i}" for i in range(count or score_rows(folder.adapter_dir))}


def trained_tokenizer(folder: TrainedFolder, which: Which = "adapter") -> Any:
    """The tokenizer to use (pad ``<fim_pad>``): the merged folder's for ``merged``, else the one saved with
    the adapter or model, else the base's."""
    from transformers import AutoTokenizer

    from sc2tune.modeling import load_tokenizer, set_pad_token

    candidates = [folder.merged_dir] if which == "merged" else []
    candidates += [folder.adapter_dir, folder.full_dir, folder.merged_dir]
    source = next((d for d in candidates if d is not None and has_tokenizer(d)), None)
    if source is None and folder.base_name is None:
        raise UserError(f"{folder.trained_dir} has no tokenizer files and names no base model to take one from",
                        hint="save the tokenizer beside the model (tokenizer.save_pretrained(folder))")
    if source is None:  # the base's, loaded as training loaded it
        spec = folder.recipe.model if folder.recipe is not None else ModelSpec()
        return load_tokenizer(spec.model_copy(update={"name_or_path": str(folder.base_dir())}))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError) as err:
        raise UserError(f"{source}: cannot load its tokenizer ({err})") from None
    set_pad_token(tokenizer)
    return tokenizer


@dataclass(frozen=True)
class LoadedModel:
    """A model of a trained folder, in eval mode, with its tokenizer."""

    model: Any  # a transformers model, or a PeftModel over one
    tokenizer: Any
    folder: TrainedFolder
    classifier: bool
    labels: dict[int, str]  # id -> name of a classifier's classes ({} for a causal LM)


def load_trained(path: str | Path | TrainedFolder, which: Which, *, dtype: Dtype | torch.dtype | None = None,
                 device: str | None = None, overrides: Sequence[str] = (), tokenizer: Any = None,
                 labels: dict[int, str] | None = None) -> LoadedModel:
    """Load one model of a trained folder, with its tokenizer, in eval mode.

    * ``base``: the base model as trained (the recipe's quantisation, e.g. 4-bit NF4 for QLoRA);
    * ``adapter``: that base with the PEFT adapter on top (``PeftModel.from_pretrained``), or the full
      fine-tune (OUTPUT/model);
    * ``merged``: the merged folder (OUTPUT/merged), or a model folder itself, unquantised.

    ``dtype`` None takes the recipe's ``model.dtype`` (``auto`` without a recipe); ``device`` None is CUDA when
    available, else CPU. ``tokenizer`` and ``labels`` replace the folder's own (e.g. the labels a data set
    names); a classifier's ``config.pad_token_id`` becomes the tokenizer's pad token.
    """
    import torch

    from sc2tune.modeling import resolve_dtype

    folder = path if isinstance(path, TrainedFolder) else read_trained(path, overrides)
    recipe = folder.recipe
    if dtype is None or isinstance(dtype, str):
        torch_dtype = resolve_dtype(dtype or (recipe.model.dtype if recipe is not None else "auto"))
    else:
        torch_dtype = dtype
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier = folder.classifier
    with quiet_transformers():
        tok = tokenizer if tokenizer is not None else trained_tokenizer(folder, which)
        names = labels or (class_labels(folder) if classifier else None)
        spec = recipe.model if recipe is not None else None
        common: dict[str, Any] = {"classifier": classifier, "dtype": torch_dtype, "device": device, "labels": names,
                                  "pad_token_id": tok.pad_token_id}
        if which == "merged":
            if folder.merged_dir is None:
                where = folder.run_dir / RUN_MERGED if folder.run_dir is not None else folder.path
                raise UserError(f"{where} holds no merged model",
                                hint=f"run sc2tune merge {folder.trained_dir} --out {where} first")
            model = load_pretrained(folder.merged_dir, **common)
        elif which == "adapter" and folder.adapter_dir is None:
            if folder.full_dir is None:
                raise UserError(f"{folder.path} is a model folder: it holds no adapter",
                                hint="load it as it is (merged), or give the adapter or run folder")
            model = load_pretrained(folder.full_dir, **common, spec=spec)
        elif which in ("base", "adapter"):
            if folder.kind == "model" and recipe is None:
                raise UserError(f"{folder.path} is a model folder without recipe.yaml: it names no base model",
                                hint="load it as it is (merged), or give the adapter or run folder")
            model = load_pretrained(folder.base_dir(), **common, quant=folder.quantization, spec=spec)
            if which == "adapter":
                model = attach_adapter(model, folder.adapter_dir)  # type: ignore[arg-type]
        else:
            raise UserError(f"unknown model '{which}'", hint="choose from base, adapter, merged")
    if classifier and not names:
        names = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return LoadedModel(model, tok, folder, classifier, dict(names or {}) if classifier else {})
