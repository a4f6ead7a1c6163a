"""Loading the models of a trained folder: base (as trained), base + adapter, or merged, with the tokenizer
(:func:`load_trained`); torch, transformers and peft are imported only inside the loaders."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sc2tune.errors import UserError
from sc2tune.recipe import Dtype, ModelSpec, QuantSpec
from sc2tune.runs.declared import check_adapter_folder
from sc2tune.runs.layout import (
    ADAPTER_WEIGHTS,
    RUN_MERGED,
    has_tokenizer,
    names_own_code,
    own_code_refused,
    warn_own_code_unused,
)
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


def load_pretrained(folder: Path, *, classifier: bool, dtype: torch.dtype, device: str,
                    labels: dict[int, str] | None = None, pad_token_id: int | None = None,
                    quant: QuantSpec | None = None, spec: ModelSpec | None = None,
                    trust_remote_code: bool | None = None) -> Any:
    """``from_pretrained`` of a model folder in eval mode: causal LM or classifier (``labels`` give its head),
    ``quant`` 4/8-bit on ``device`` (with bitsandbytes' exact training kernel), else moved to ``device``.
    ``spec`` (the run's model section) adds its attention kernel and remote-code setting; ``trust_remote_code``
    (the caller's own say, e.g. ``sc2tune merge --trust-remote-code``) replaces that setting when given.
    transformers is always told True or False (None would ask on a terminal). A folder whose config.json names
    its own code (``auto_map``), loaded without it, is a UserError naming ``--trust-remote-code`` before any of
    that code runs when transformers does not know the config's ``model_type``; when it does (e.g.
    ``starcoder2``), transformers builds its own class and ignores the folder's code (none of it runs), and a
    warning says the code in auto_map was not used."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from sc2tune.modeling import keep_4bit_kernel_exact, quantization_config, resolve_attn

    if trust_remote_code is None:
        trust_remote_code = spec is not None and spec.trust_remote_code
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if spec is not None:
        kwargs["attn_implementation"] = resolve_attn(spec)
    if classifier and labels:
        kwargs.update(num_labels=len(labels), id2label=dict(labels), label2id={v: k for k, v in labels.items()})
    if quant is not None:
        kwargs["quantization_config"] = quantization_config(quant, dtype, skip=["score"] if classifier else None)
        kwargs["device_map"] = {"": device}
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    try:
        model = loader.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as err:
        if not trust_remote_code and names_own_code(folder):
            raise own_code_refused(folder) from None
        raise UserError(f"{folder}: cannot load the model ({err})",
                        hint="a model folder has config.json and *.safetensors") from None
    if not trust_remote_code:
        warn_own_code_unused(folder, type(model).__name__)
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
    """PEFT's ``PeftModel.from_pretrained(base, adapter_dir)``, for inference (eval mode), once every tensor of
    the adapter file is one its config declares (:mod:`sc2tune.runs.declared`)."""
    from peft import PeftModel

    check_adapter_folder(Path(adapter_dir))

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


def trained_tokenizer(folder: TrainedFolder, which: Which = "adapter", *, trust_remote_code: bool = False) -> Any:
    """The tokenizer to use (pad ``<fim_pad>``): the merged folder's for ``merged``, else the one saved with
    the adapter or model, else the base's. The model's own code may load it only with ``trust_remote_code``
    (the caller's say) or the recipe's (confirmed) ``model.trust_remote_code``."""
    from transformers import AutoTokenizer

    from sc2tune.modeling import load_tokenizer
    from sc2tune.tokens import set_pad_token

    candidates = [folder.merged_dir] if which == "merged" else []
    candidates += [folder.adapter_dir, folder.full_dir, folder.merged_dir]
    source = next((d for d in candidates if d is not None and has_tokenizer(d)), None)
    if source is None and folder.base_name is None:
        raise UserError(f"{folder.trained_dir} has no tokenizer files and names no base model to take one from",
                        hint="save the tokenizer beside the model (tokenizer.save_pretrained(folder))")
    trust = trust_remote_code or (folder.recipe is not None and folder.recipe.model.trust_remote_code)
    if source is None:  # the base's, loaded as training loaded it
        spec = folder.recipe.model if folder.recipe is not None else ModelSpec()
        base = folder.base_dir(trust_remote_code=trust)
        return load_tokenizer(spec.model_copy(update={"name_or_path": str(base), "trust_remote_code": trust}))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source), trust_remote_code=trust)
    except (OSError, ValueError) as err:
        if not trust and names_own_code(source):
            raise own_code_refused(source) from None
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
                 labels: dict[int, str] | None = None, trust_remote_code: bool = False) -> LoadedModel:
    """Load one model of a trained folder, with its tokenizer, in eval mode.

    * ``base``: the base model as trained (the recipe's quantisation, e.g. 4-bit NF4 for QLoRA);
    * ``adapter``: that base with the PEFT adapter on top (``PeftModel.from_pretrained``), or the full
      fine-tune (OUTPUT/model);
    * ``merged``: the merged folder (OUTPUT/merged), or a model folder itself, unquantised.

    ``dtype`` None takes the recipe's ``model.dtype`` (``auto`` without a recipe); ``device`` None is CUDA when
    available, else CPU. ``tokenizer`` and ``labels`` replace the folder's own (e.g. the labels a data set
    names); a classifier's ``config.pad_token_id`` becomes the tokenizer's pad token.

    ``trust_remote_code`` is the caller's say (``--trust-remote-code``) that the model's own Python code (its
    config.json's ``auto_map``) may run: every load (merged, full fine-tune, base, tokenizer, a hub base's
    fetch) gets it, or the recipe's confirmed ``model.trust_remote_code``. Without either, transformers is told
    False: a model whose ``model_type`` only its own code defines is a UserError naming ``--trust-remote-code``
    before any of that code runs; one of a type transformers has built in (e.g. ``starcoder2``) with an
    ``auto_map`` loads as transformers' own class, the folder's code unused (and unrun), with a warning saying so.
    """
    import torch

    from sc2tune.modeling import resolve_dtype

    folder = path if isinstance(path, TrainedFolder) else read_trained(path, overrides,
                                                                        trust_remote_code=trust_remote_code)
    recipe = folder.recipe
    trust = trust_remote_code or (recipe is not None and recipe.model.trust_remote_code)
    if dtype is None or isinstance(dtype, str):
        torch_dtype = resolve_dtype(dtype or (recipe.model.dtype if recipe is not None else "auto"))
    else:
        torch_dtype = dtype
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier = folder.classifier
    with quiet_transformers():
        tok = tokenizer if tokenizer is not None else trained_tokenizer(folder, which, trust_remote_code=trust)
        names = labels or (class_labels(folder) if classifier else None)
        spec = recipe.model if recipe is not None else None
        common: dict[str, Any] = {"classifier": classifier, "dtype": torch_dtype, "device": device, "labels": names,
                                  "pad_token_id": tok.pad_token_id, "trust_remote_code": trust}
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
            model = load_pretrained(folder.base_dir(trust_remote_code=trust), **common, quant=folder.quantization,
                                    spec=spec)
            if which == "adapter":
                model = attach_adapter(model, folder.adapter_dir)  # type: ignore[arg-type]
        else:
            raise UserError(f"unknown model '{which}'", hint="choose from base, adapter, merged")
    if classifier and not names:
        names = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return LoadedModel(model, tok, folder, classifier, dict(names or {}) if classifier else {})
