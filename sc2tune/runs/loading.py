"""Which model of a trained folder to load: base (as trained), base + adapter, or merged, with the tokenizer
(:func:`model_source`, :func:`load_trained`); the loading itself is :mod:`sc2tune.modeling`'s."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sc2tune.errors import UserError
from sc2tune.modeling import ModelSource, load_model, load_tokenizer
from sc2tune.recipe import Dtype
from sc2tune.runs.declared import check_adapter_folder
from sc2tune.runs.layout import ADAPTER_WEIGHTS, RUN_MERGED, has_tokenizer
from sc2tune.runs.trained import TrainedFolder, read_trained

if TYPE_CHECKING:
    import torch

Which = Literal["base", "adapter", "merged"]


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
    the adapter or model, else the base's; its own code runs only when the folder's source may run it."""
    candidates = [folder.merged_dir] if which == "merged" else []
    candidates += [folder.adapter_dir, folder.full_dir, folder.merged_dir]
    source = next((d for d in candidates if d is not None and has_tokenizer(d)), None)
    if source is None and folder.base_name is None:
        raise UserError(f"{folder.trained_dir} has no tokenizer files and names no base model to take one from",
                        hint="save the tokenizer beside the model (tokenizer.save_pretrained(folder))")
    where = folder.base_dir() if source is None else source  # the base's, loaded as training loaded it
    return load_tokenizer(ModelSource(str(where), trust_remote_code=folder.trust_remote_code))


def model_source(folder: TrainedFolder, which: Which, *, dtype: Dtype, labels: dict[int, str] | None
                 ) -> ModelSource:
    """The :class:`~sc2tune.modeling.ModelSource` of one model of ``folder`` (see :func:`load_trained`); an
    adapter is checked (:func:`~sc2tune.runs.declared.check_adapter_folder`) before it is named."""
    recipe = folder.recipe
    attn = recipe.model.attn_implementation if recipe is not None else None
    common: dict[str, Any] = {"dtype": dtype, "trust_remote_code": folder.trust_remote_code}
    if folder.classifier:
        common.update(head="sequence-classification", labels=labels)
    if which == "merged":
        if folder.merged_dir is None:
            where = folder.run_dir / RUN_MERGED if folder.run_dir is not None else folder.path
            raise UserError(f"{where} holds no merged model",
                            hint=f"run sc2tune merge {folder.trained_dir} --out {where} first")
        return ModelSource(str(folder.merged_dir), attn=None, **common)
    if which == "adapter" and folder.adapter_dir is None:
        if folder.full_dir is None:
            raise UserError(f"{folder.path} is a model folder: it holds no adapter",
                            hint="load it as it is (merged), or give the adapter or run folder")
        return ModelSource(str(folder.full_dir), attn=attn, **common)
    if which not in ("base", "adapter"):
        raise UserError(f"unknown model '{which}'", hint="choose from base, adapter, merged")
    if folder.kind == "model" and recipe is None:
        raise UserError(f"{folder.path} is a model folder without recipe.yaml: it names no base model",
                        hint="load it as it is (merged), or give the adapter or run folder")
    if which == "adapter":
        check_adapter_folder(folder.adapter_dir)  # type: ignore[arg-type]
    quant = recipe.adapter.quantization if recipe is not None else None  # the base as trained
    return ModelSource(str(folder.base_dir()), quant=quant, attn=attn,
                       adapter=folder.adapter_dir if which == "adapter" else None, **common)


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

    The model's own Python code runs only as the folder was read to allow (:func:`read_trained`: pass it a
    :class:`TrainedFolder` read with ``trust_remote_code``, or a path with ``overrides`` confirming the recipe's).
    """
    import torch

    folder = path if isinstance(path, TrainedFolder) else read_trained(path, overrides)
    if dtype is not None and not isinstance(dtype, str):
        dtype = str(dtype).removeprefix("torch.")  # type: ignore[assignment]
    dtype = dtype or (folder.recipe.model.dtype if folder.recipe is not None else "auto")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier = folder.classifier
    with quiet_transformers():
        tok = tokenizer if tokenizer is not None else trained_tokenizer(folder, which)
        names = labels or (class_labels(folder) if classifier else None)
        source = model_source(folder, which, dtype=dtype, labels=names)  # type: ignore[arg-type]
        model = load_model(source, pad_token_id=tok.pad_token_id, device=device)
    if classifier and not names:
        names = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return LoadedModel(model, tok, folder, classifier, dict(names or {}) if classifier else {})
