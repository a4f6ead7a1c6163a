"""Which tensors an adapter file may hold: exactly those its ``adapter_config.json`` declares.

PEFT loads every tensor of ``adapter_model.safetensors`` whose name is a parameter of the wrapped model, and
``load_state_dict`` writes it over the base weight, so a file holding, say, a zeroed ``model.norm.weight``
would silently replace the base's norm in ``generate`` / ``classify`` / ``eval`` and in a merge (whose
verification against PEFT's own loading would then agree with the damage). sc2tune therefore reads the tensor
names first and refuses the folder, naming each tensor its config does not declare. Saved names are
``base_model.model.`` + the module's name inside the model + the parameter; a tensor is declared when it is

* ``{m}.lora_A.weight`` / ``{m}.lora_B.weight`` (Linear) or ``{m}.lora_embedding_A`` / ``{m}.lora_embedding_B``
  (Embedding) of a module ``m`` that ``target_modules`` targets, by PEFT's own rule
  (``peft.tuners.tuners_utils.check_target_module_exists``: a list entry matches the name or its dotted end, a
  string is a full-match regular expression, with ``exclude_modules``, ``layers_to_transform`` and
  ``layers_pattern``; ``all-linear`` accepts every module, as the names it stands for are not in the file; with
  ``ensure_weight_tying`` an embedding layer, ``embed_tokens`` or ``lm_head``, is targeted when its tied partner is);
* ``{m}.lora_magnitude_vector`` of a targeted ``m`` when ``use_dora`` is set; ``{m}.lora_B.bias`` when
  ``lora_bias`` is set;
* any tensor of a module ``modules_to_save`` names (PEFT's rule: the module's name ends with an entry; ``score`` and ``classifier`` are added for ``task_type``
  ``SEQ_CLS``, as PEFT's sequence-classification model adds them);
* ``{m}.base_layer.weight`` of a targeted embedding layer ``m`` (``embed_tokens``, ``lm_head``: the copy PEFT's
  ``save_embedding_layers`` writes); an embedding that is not targeted is refused (sc2tune never resizes the
  vocabulary, which is PEFT's other reason to save one);
* a ``bias`` when the config's ``bias`` is ``all``, or, with ``lora_only``, the bias of a targeted module;
* ``{m}.token_adapter.*`` when ``trainable_token_indices`` is set.

Nothing else: a base weight (norm, attention, MLP, an untargeted head) in an adapter file is refused.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sc2tune.errors import UserError
from sc2tune.runs.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, read_adapter_json

PREFIX = "base_model.model."
#: Layers PEFT saves whole (``save_embedding_layers``) when they are targeted (``peft.utils.other``).
EMBEDDING_LAYERS = ("embed_tokens", "lm_head")
_CLASSIFIER_HEADS = ("classifier", "score")
_LORA = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")
MAGNITUDE = (".lora_magnitude_vector", ".lora_magnitude_vector.weight")  # DoRA, as PEFT versions save it
#: Largest safetensors header read (real adapter headers are a few hundred kB at most).
_MAX_HEADER = 64 << 20


def _peft_config(config: dict[str, Any]) -> SimpleNamespace:
    """The config attributes PEFT's target matching reads, with PEFT's defaults."""
    keys = ("target_modules", "exclude_modules", "modules_to_save", "target_parameters", "layers_to_transform",
            "layers_pattern")
    return SimpleNamespace(**{k: config.get(k) for k in keys})


def _module_saved(module: str, names: Iterable[str]) -> bool:
    """PEFT's ``modules_to_save`` rule (``peft.utils.other._set_trainable``): the module's name ends with an
    entry (a plain string test: ``norm`` also names ``input_layernorm``)."""
    return any(module.endswith(n) for n in names)


def _targeted(config: dict[str, Any], ns: SimpleNamespace, module: str) -> bool:
    """Whether LoRA factors of ``module`` are declared by the config (PEFT's own rule, module doc)."""
    targets = config.get("target_modules")
    if targets == "all-linear":  # PEFT writes the names it expanded to; a file saying this cannot be checked
        return True
    if targets is None:  # PEFT's defaults for the model type, unless the adapter targets parameters instead
        return config.get("target_parameters") is None
    from peft.tuners.tuners_utils import check_target_module_exists

    try:
        if check_target_module_exists(ns, module):
            return True
        if config.get("ensure_weight_tying") and module.split(".")[-1] in EMBEDDING_LAYERS:
            # PEFT adapts the layer tied to a targeted embedding too, without writing it into target_modules
            return any(check_target_module_exists(ns, name) for name in ("model.embed_tokens", "lm_head"))
    except (re.error, TypeError, ValueError):
        return False
    return False


def _saved_modules(config: dict[str, Any]) -> list[str]:
    saved = list(config.get("modules_to_save") or [])
    if str(config.get("task_type", "")).upper() == "SEQ_CLS":
        saved.extend(_CLASSIFIER_HEADS)
    return saved


def undeclared(config: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """The tensor names among ``keys`` that ``config`` (``adapter_config.json`` as a dict) does not declare
    (module doc), in their order."""
    ns = _peft_config(config)
    saved = _saved_modules(config)
    bias = str(config.get("bias") or "none")
    return [key for key in keys if not _declared(config, ns, saved, bias, key)]


def _declared(config: dict[str, Any], ns: SimpleNamespace, saved: list[str], bias: str, key: str) -> bool:
    name = key.removeprefix(PREFIX)
    parts = name.split(".")
    # modules_to_save: any tensor under such a module (PEFT drops ``modules_to_save.default`` on save)
    if saved and any(_module_saved(".".join(parts[:i]), saved) for i in range(1, len(parts))):
        return True
    for suffix in _LORA:
        if name.endswith(suffix):
            return _targeted(config, ns, name[: -len(suffix)])
    for suffix in MAGNITUDE:
        if name.endswith(suffix):
            return bool(config.get("use_dora")) and _targeted(config, ns, name[: -len(suffix)])
    if name.endswith(".lora_B.bias"):
        return bool(config.get("lora_bias")) and _targeted(config, ns, name[: -len(".lora_B.bias")])
    if ".token_adapter." in name:
        return bool(config.get("trainable_token_indices"))
    if name.endswith(".base_layer.weight"):
        module = name[: -len(".base_layer.weight")]
        return module.split(".")[-1] in EMBEDDING_LAYERS and _targeted(config, ns, module)
    if name == "bias" or name.endswith(".bias"):
        if bias == "all":
            return True
        if bias.endswith("_only"):
            module = name.removesuffix("bias").removesuffix(".").removesuffix(".base_layer")
            return _targeted(config, ns, module)
    return False


def safetensors_names(file: Path) -> list[str]:
    """The tensor names of a ``.safetensors`` file, from its header alone (8 bytes little-endian length, then
    that much JSON; ``__metadata__`` is not a tensor); an unreadable header is a UserError naming the file."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(8)
            size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 0 < size <= _MAX_HEADER:
                raise ValueError(f"header length {size}")
            header = json.loads(fh.read(size))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (OSError, ValueError, struct.error) as err:
        raise UserError(f"{file}: cannot read the adapter weights ({err})") from None
    return [k for k in header if k != "__metadata__"]


def adapter_tensor_names(folder: Path) -> list[str]:
    """The tensor names of an adapter folder's weights file (``adapter_model.safetensors`` from its header;
    ``adapter_model.bin`` through ``torch.load(weights_only=True)``); [] when it has neither."""
    for name in ADAPTER_WEIGHTS:
        file = folder / name
        if not file.is_file():
            continue
        if name.endswith(".safetensors"):
            return safetensors_names(file)
        import torch

        try:
            return list(torch.load(file, map_location="meta", weights_only=True))
        except Exception as err:  # noqa: BLE001 - a corrupt or foreign pickle: all mean "cannot read"
            raise UserError(f"{file}: cannot read the adapter weights ({err})") from None
    return []


def check_adapter_folder(folder: Path) -> None:
    """:func:`check_declared` for an adapter folder as PEFT would load it (its config and weights file)."""
    if (folder / ADAPTER_CONFIG).is_file():
        check_declared(folder, read_adapter_json(folder), adapter_tensor_names(folder))


def check_declared(folder: Path, config: dict[str, Any], keys: Iterable[str]) -> None:
    """Refuse an adapter file holding tensors its config does not declare, naming them (module doc)."""
    bad = undeclared(config, keys)
    if not bad:
        return
    shown = ", ".join(f"'{k}'" for k in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise UserError(
        f"{folder}: the adapter file holds {len(bad)} tensor(s) that its adapter_config.json does not declare "
        f"(not LoRA factors of a target_modules module, nor modules_to_save, nor a bias its 'bias' setting "
        f"saves): {shown}; loading it would overwrite those base weights, so it is not used",
        hint="use the adapter folder PEFT's save_pretrained (or sc2tune train) wrote; if the tensors are meant "
        "to be trained parts, list their modules in modules_to_save",
    )
