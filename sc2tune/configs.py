"""Where a model's config comes from, and the weightless (meta-device) model built from it.

The planner never loads weights. A name resolves to a ``transformers`` config in this order:

1. the built-in ``sc2tune/tiny-starcoder2`` -> its config.json in ``sc2tune/assets/configs`` (what
   :mod:`sc2tune.tiny` builds the model from; not imported here, so validate and plan import no torch);
2. a local folder with ``config.json`` (or the path of a ``config.json`` file);
3. a config shipped in ``sc2tune/assets/configs`` (StarCoder2 3B/7B/15B, StarCoder, StarCoderBase 15.5B and 7B),
   so the usual models plan offline; matched by the hub id (``bigcode/starcoder2-7b``) or its last part;
4. the hub, through ``AutoConfig.from_pretrained`` (needs network, or a hub cache).

:func:`meta_model` instantiates the architecture on the ``meta`` device (``accelerate.init_empty_weights``):
every parameter and buffer exists with its real shape and dtype but owns no memory, so counting them is
exact for any architecture and costs no RAM, even for 15B.

:func:`model_layout` is what the planner and ``validate`` read: the module names, kinds and shapes
(:class:`~sc2tune.architectures.ModelLayout`). For StarCoder2 and GPTBigCode configs found without the hub it
is written down from config.json (no torch, milliseconds); otherwise it is read off :func:`meta_model` (which
imports torch and transformers' modeling code, seconds). Both give the same layout (tested).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sc2tune.architectures import ModelLayout, analytic_layout, layout_of_model
from sc2tune.errors import UserError
from sc2tune.hub import ensure_hub_reachable
from sc2tune.recipe import TINY_MODEL

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).parent / "assets" / "configs"
#: The built-in model's config.json (``sc2tune.tiny.TINY_CONFIG_FILE``).
TINY_CONFIG_FILE = CONFIGS_DIR / "tiny-starcoder2.json"

#: Hub ids whose config ships with sc2tune (file stem in ``assets/configs``).
SHIPPED: dict[str, str] = {
    "bigcode/starcoder2-3b": "starcoder2-3b",
    "bigcode/starcoder2-7b": "starcoder2-7b",
    "bigcode/starcoder2-15b": "starcoder2-15b",
    "bigcode/starcoder": "starcoder",
    "bigcode/starcoderbase": "starcoderbase",
    "bigcode/starcoderbase-7b": "starcoderbase-7b",
}


def shipped_config_path(name: str) -> Path | None:
    """The bundled config.json for a known hub id (or its last path part), else None."""
    stem = SHIPPED.get(name) or SHIPPED.get(f"bigcode/{name}")
    return CONFIGS_DIR / f"{stem}.json" if stem else None


def _from_dict(data: dict, source: str) -> PretrainedConfig:
    from transformers import AutoConfig

    model_type = data.get("model_type")
    if not model_type:
        raise UserError(f"{source}: config has no 'model_type'", hint="give a transformers config.json")
    try:
        return AutoConfig.for_model(**data)
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{source}: cannot build a '{model_type}' config: {err}") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path}: {err}", hint="the file must be a JSON config") from None


def _local_config_file(name_or_path: str, revision: str | None) -> tuple[Path, str] | None:
    """(config.json, the name errors give it) of the built-in model, a local folder or file, or a bundled config
    (module doc, steps 1-3); None for a hub id (step 4); a UserError for a path that does not exist."""
    if name_or_path == TINY_MODEL:
        return TINY_CONFIG_FILE, name_or_path
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path / "config.json", str(path / "config.json")
    if path.is_file():
        return path, str(path)
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise UserError(f"model folder not found: {name_or_path}",
                        hint="give an existing folder with config.json, or a hub id like bigcode/starcoder2-3b")
    shipped = shipped_config_path(name_or_path)
    return (shipped, f"{name_or_path} (bundled config)") if shipped is not None and revision is None else None


def load_config(name_or_path: str, *, revision: str | None = None,
                trust_remote_code: bool = False) -> PretrainedConfig:
    """The transformers config of ``name_or_path`` (see the module docstring for the lookup order)."""
    local = _local_config_file(name_or_path, revision)
    if local is not None:
        if not local[0].is_file():
            raise UserError(f"{local[0].parent} has no config.json", hint="point at a Hugging Face model folder")
        return _from_dict(_read_json(local[0]), local[1])
    ensure_hub_reachable(name_or_path)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        known = ", ".join(SHIPPED)
        raise UserError(
            f"cannot find the config of '{name_or_path}': {err}",
            hint=f"give a local folder with config.json, a hub id you can reach, or one of: {known}",
        ) from None


@functools.lru_cache(maxsize=16)
def _meta_model_cached(config_json: str, model_type: str, head: str, dtype: torch.dtype,
                       num_labels: int) -> PreTrainedModel:
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    data = json.loads(config_json)
    data.pop("model_type", None)
    config = AutoConfig.for_model(model_type, **data)
    if head == "sequence-classification":
        config.num_labels = num_labels
        loader = AutoModelForSequenceClassification
    else:
        loader = AutoModelForCausalLM
    with init_empty_weights(include_buffers=True):
        try:
            return loader.from_config(config, dtype=dtype)
        except (ValueError, KeyError) as err:
            raise UserError(f"cannot build a '{model_type}' model ({head}) from its config: {err}") from None


def meta_model(config: PretrainedConfig, *, head: str = "causal-lm", dtype: torch.dtype | None = None,
               num_labels: int = 2) -> PreTrainedModel:
    """The model of ``config`` with every parameter on the meta device, in ``dtype`` (default bfloat16; cached).

    Buffers go to the meta device too but keep the dtype transformers gives them (rotary ``inv_freq``
    stays float32, GPTBigCode's causal ``bias`` mask is bool), as ``get_memory_footprint`` counts them.
    """
    import torch

    return _meta_model_cached(config.to_json_string(use_diff=False), config.model_type, head,
                              torch.bfloat16 if dtype is None else dtype, num_labels)


def model_layout(name_or_path: str, *, revision: str | None = None, trust_remote_code: bool = False,
                 head: str = "causal-lm", num_labels: int = 2) -> ModelLayout:
    """The module layout of a model (names, kinds, shapes; see :mod:`sc2tune.architectures`), without weights.

    StarCoder2 and GPTBigCode configs found locally (built-in, folder, bundled) are laid out from config.json
    alone, without importing torch; anything else goes through :func:`load_config` and :func:`meta_model`,
    which give the same layout (and the same errors) for every architecture transformers knows.
    """
    local = _local_config_file(name_or_path, revision)  # the file load_config reads (module doc, steps 1-3)
    data = _read_json(local[0]) if local is not None and local[0].is_file() else None
    if isinstance(data, dict):
        layout = _analytic_cached(json.dumps(data, sort_keys=True), head, num_labels)
        if layout is not None:
            return layout
    config = load_config(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    return layout_of_model(meta_model(config, head=head, num_labels=num_labels))


@functools.lru_cache(maxsize=16)
def _analytic_cached(data_json: str, head: str, num_labels: int) -> ModelLayout | None:
    return analytic_layout(json.loads(data_json), head=head, num_labels=num_labels)
