"""A run, adapter or model folder read into a typed :class:`TrainedFolder` (:func:`read_trained`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sc2tune.errors import UserError
from sc2tune.modeling import load_peft_config
from sc2tune.recipe import REMOTE_CODE_OVERRIDE, Recipe
from sc2tune.runs.layout import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    RECIPE_FILE,
    RUN_ADAPTER,
    RUN_FULL,
    RUN_MERGED,
    Kind,
    _looks_adapter,
    _looks_model,
    folder_kind,
    read_adapter_json,
    read_json_object,
    read_labels,
    read_saved_recipe,
    resolve_base,
)

if TYPE_CHECKING:
    from peft import PeftConfig


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
    #: the model's own code may run: the caller's say (``--trust-remote-code``) or the recipe's, confirmed by it
    trust_remote_code: bool = False

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

    def base_dir(self) -> Path:
        """The base model's local folder (:func:`resolve_base`; a hub base with its Python files only when
        :attr:`trust_remote_code`); a UserError when the folder names none."""
        name = self.base_name
        if not name:
            raise UserError(f"{self.trained_dir}: the adapter does not name its base model",
                            hint="merge it with --base first, or fix base_model_name_or_path in adapter_config.json")
        revision = self.recipe.model.revision if self.recipe is not None else None
        return resolve_base(str(name), revision=revision, trust_remote_code=self.trust_remote_code)


def _peft_config(folder: Path) -> PeftConfig:
    """PEFT's own reading of ``adapter_config.json`` (checked first to be a small JSON object with peft_type)."""
    read_adapter_json(folder)
    try:
        return load_peft_config(folder)
    except (TypeError, ValueError, KeyError, AttributeError) as err:
        raise UserError(f"{folder / ADAPTER_CONFIG}: PEFT cannot read it ({err})",
                        hint="replace it with the adapter_config.json PEFT's save_pretrained wrote") from None


def read_trained(path: str | Path, overrides: Sequence[str] = (), *, trust_remote_code: bool = False) -> TrainedFolder:
    """Read a run, adapter or model folder (or a base model's hub id / built-in name) into a TrainedFolder.

    The recipe is read before anything else, so a saved ``model.trust_remote_code`` not confirmed by
    ``overrides`` or ``trust_remote_code`` (the caller's say, e.g. ``--trust-remote-code``) stops here. A run's
    recipe is ``adapter/recipe.yaml`` (``model/recipe.yaml``). A hub id is fetched with its Python files only
    with ``trust_remote_code``.
    """
    if trust_remote_code:
        overrides = (*overrides, REMOTE_CODE_OVERRIDE)
    folder = Path(path)
    kind = folder_kind(folder)
    if kind is None:
        folder = _named_model(path, trust_remote_code=trust_remote_code)
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
    trusted = trust_remote_code or (recipe is not None and recipe.model.trust_remote_code)
    return TrainedFolder(folder, kind, run_dir, adapter_dir, full_dir, merged_dir, recipe, adapter_config, labels,
                         trusted)


def _named_model(path: str | Path, *, trust_remote_code: bool) -> Path:
    """A path that is no trained folder: a base model's hub id or built-in name, else a UserError."""
    folder = Path(path)
    if folder.is_dir():
        raise UserError(f"{path}: not a model, merged, adapter or run folder (no config.json, adapter_config.json, "
                        "adapter/ or model/ inside)",
                        hint="a model folder has config.json and *.safetensors; an adapter folder "
                        "adapter_config.json; a run folder adapter/")
    try:
        return resolve_base(str(path), trust_remote_code=trust_remote_code)
    except UserError:
        raise UserError(f"{path}: not a model, merged, adapter or run folder, nor a hub id I can fetch",
                        hint="a model folder has config.json and *.safetensors; an adapter folder "
                        "adapter_config.json") from None

