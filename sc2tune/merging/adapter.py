"""Read a PEFT LoRA adapter folder into plain tensors and settings, and refuse what cannot be merged.

A PEFT LoRA folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``). Saved keys
start with ``base_model.model.`` followed by the name of the module inside the model PEFT wrapped:

* ``{module}.lora_A.weight`` ``[r, in]`` and ``{module}.lora_B.weight`` ``[out, r]`` for a Linear layer;
  its update is ``delta W = scale * B @ A`` (``[out, in]``; transposed when ``fan_in_fan_out``);
* ``{module}.lora_embedding_A`` ``[r, num_embeddings]`` and ``{module}.lora_embedding_B`` ``[dim, r]`` for an
  Embedding; its update is ``delta W = scale * (B @ A)^T`` (``[num_embeddings, dim]``);
* any other tensor is a full replacement of a base weight: ``modules_to_save`` copies (``score.weight``;
  PEFT drops the ``modules_to_save.default`` part on save) and the ``{module}.base_layer.weight`` copies PEFT
  saves for targeted embeddings (PEFT loads them over the base weight, so the merge does too).

* ``{module}.lora_magnitude_vector`` for DoRA (``use_dora``): the learnt magnitude ``m``, one value per
  output feature (see :meth:`LoraFactors.apply_to` for the merged weight).

Every tensor must be one the config declares (:mod:`sc2tune.runs.declared`: LoRA factors of a targeted module,
DoRA magnitudes, ``modules_to_save``, a targeted embedding's copy, a bias the config's ``bias`` saves): a base
weight smuggled into the file (a zeroed ``model.norm.weight``) is refused by name. Every tensor must be finite: an adapter holding NaN or infinity (a diverged run) is refused, naming the tensor.

``scale = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA), where ``r`` and ``alpha`` come from ``rank_pattern`` /
``alpha_pattern`` when a pattern matches the module name (PEFT's rule: the pattern matches the end of the
name at a dot boundary) and from ``r`` / ``lora_alpha`` otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sc2tune.errors import UserError
from sc2tune.recipe import QuantSpec, Recipe
from sc2tune.runs import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_declared, read_adapter_json
from sc2tune.runs.declared import MAGNITUDE, PREFIX
from sc2tune.runs.trained import TrainedFolder, read_trained

log = logging.getLogger(__name__)

_LINEAR_A, _LINEAR_B = ".lora_A.weight", ".lora_B.weight"
_EMBED_A, _EMBED_B = ".lora_embedding_A", ".lora_embedding_B"


@dataclass(frozen=True)
class LoraFactors:
    """The two low-rank factors of one adapted module and their scale."""

    module: str
    a: torch.Tensor
    b: torch.Tensor
    scale: float
    embedding: bool
    fan_in_fan_out: bool = False
    magnitude: torch.Tensor | None = None  # DoRA's m, one value per output feature

    @property
    def transposed(self) -> bool:
        """True when the weight is laid out ``[in, out]`` (embeddings ``[num_embeddings, dim]``, Conv1D)."""
        return self.embedding or self.fan_in_fan_out

    def apply_to(self, weight: torch.Tensor) -> torch.Tensor:
        """The merged weight, in place on a float32 ``weight``: LoRA, or DoRA when a magnitude is saved.

        LoRA: ``W' = W + s B A``. DoRA (PEFT's definition): ``W' = m / ||W + s B A|| * (W + s B A)``, where the
        norm is the L2 norm of each output feature's weights, taken over the input axis: for a Linear
        ``[out, in]`` weight over ``in`` (dim 1), one norm per row; for the transposed layouts (embedding
        ``[num_embeddings, dim]``, ``fan_in_fan_out``) over dim 0, one per column. ``m`` has one entry per
        norm. Training treats the norm as a constant (detached), which changes its gradient, not its value,
        so the merged weight uses the same value: the norm of the very ``W`` the adapter saw (the NF4
        round trip for QLoRA) plus the update, all in float32.
        """
        self.add_to(weight)
        if self.magnitude is None:
            return weight
        dim = 0 if self.transposed else 1
        norm = torch.linalg.vector_norm(weight, dim=dim, keepdim=True)
        m = self.magnitude.to(torch.float32)
        factor = (m.view(1, -1) if self.transposed else m.view(-1, 1)) / norm
        return weight.mul_(factor)

    def add_to(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight += scale * B @ A`` in place (float32), as one fused matmul-add (``addmm``).

        The scale goes into the small factor first, and a transposed layout (embeddings,
        ``fan_in_fan_out``) uses ``(B A)^T = A^T B^T``, so no temporary of the weight's size is made.
        """
        a, b = self.a.to(torch.float32), self.b.to(torch.float32)
        if self.embedding or self.fan_in_fan_out:
            return weight.addmm_(a.T * self.scale, b.T)
        return weight.addmm_(b, a * self.scale)

    @property
    def weight_shape(self) -> tuple[int, int]:
        """Shape of the weight this update applies to."""
        out, rank = self.b.shape
        inp = self.a.shape[1]
        if self.embedding or self.fan_in_fan_out:
            return (inp, out)
        return (out, inp)


@dataclass
class Adapter:
    """A parsed adapter folder: LoRA factors per module, full replacement tensors, and its metadata.

    ``config`` is ``adapter_config.json`` key by key, as saved (the merge checks keys PEFT versions add or
    drop); ``folder`` the folder as :func:`sc2tune.runs.read_trained` reads it (saved recipe, labels, base).
    """

    path: Path
    config: dict[str, Any]
    lora: dict[str, LoraFactors]
    full: dict[str, torch.Tensor]
    folder: TrainedFolder | None = None

    @property
    def recipe(self) -> Recipe | None:
        """The run's saved ``recipe.yaml``, validated (None without one)."""
        return self.folder.recipe if self.folder is not None else None

    @property
    def is_classifier(self) -> bool:
        """True for a sequence-classification adapter (task type SEQ_CLS or a saved ``score`` head)."""
        if self.config.get("task_type") == "SEQ_CLS":
            return True
        return any(name.split(".")[-2:-1] == ["score"] for name in self.full)

    @property
    def quant(self) -> QuantSpec | None:
        """The 4-bit settings of a QLoRA run's ``recipe.yaml`` (``adapter.method: qlora``; its quant type and
        double quantisation), or None for a plain LoRA run."""
        if self.recipe is None or self.recipe.adapter.method != "qlora":
            return None
        q = self.recipe.adapter.quantization or QuantSpec()
        return QuantSpec(quant_type=q.quant_type, double_quant=q.double_quant)

    @property
    def quant_dtype(self) -> str | None:
        """The dtype a QLoRA run loaded its base in before quantising it (``model.dtype``); None for ``auto``,
        a plain LoRA run or no recipe (the checkpoint's own)."""
        if self.quant is None or self.recipe is None or self.recipe.model.dtype == "auto":
            return None
        return self.recipe.model.dtype


def _check_supported(config: dict[str, Any], cfg_file: Path) -> None:
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise UserError(
            f"{cfg_file}: peft_type is '{config.get('peft_type')}', only LoRA adapters can be merged",
        )
    unsupported = {
        "lora_bias": "adapters with a LoRA bias (lora_bias)",
        "layer_replication": "adapters with layer_replication",
        "trainable_token_indices": "adapters with trainable_token_indices",
        "target_parameters": "adapters on parameters (target_parameters)",
        "use_qalora": "QA-LoRA adapters",
        "alora_invocation_tokens": "activated LoRA (aLoRA) adapters",
    }
    init = str(config.get("init_lora_weights", True)).lower()
    if init.startswith(("pissa", "olora", "corda", "lora_ga", "eva", "loftq")):
        raise UserError(
            f"{cfg_file}: init_lora_weights is '{config.get('init_lora_weights')}': these factors apply to the "
            "residual base PEFT rebuilds from W when it loads them, not to the checkpoint's weights, so adding "
            "them to W would merge the wrong model",
            hint="merge the adapter sc2tune saves at the end of training (OUTPUT_DIR/adapter, converted to the "
            "original base), or convert this one with PEFT's save_pretrained(..., "
            "path_initial_model_for_weight_conversion=...)",
        )
    for key, what in unsupported.items():
        if config.get(key):
            raise UserError(
                f"{cfg_file}: {key} is set; merging {what} is not supported",
                hint="merge this adapter with PEFT's merge_and_unload instead",
            )


def lora_scale(config: dict[str, Any], module: str) -> tuple[int, float]:
    """(rank, scale) of ``module``: scale = alpha / r, or alpha / sqrt(r) with ``use_rslora``; r and alpha from
    the first ``rank_pattern`` / ``alpha_pattern`` key matching the module (PEFT's own ``get_pattern_key``)."""
    from peft.utils.other import get_pattern_key

    ranks, alphas = config.get("rank_pattern") or {}, config.get("alpha_pattern") or {}
    r = int(ranks.get(get_pattern_key(ranks, module), config.get("r", 8)))
    alpha = float(alphas.get(get_pattern_key(alphas, module), config.get("lora_alpha", 8)))
    return r, (alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r)


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in ADAPTER_WEIGHTS:
        file = folder / name
        if not file.is_file():
            continue
        try:
            if name.endswith(".safetensors"):
                from safetensors.torch import load_file

                return load_file(str(file))
            return torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # corrupt or truncated file
            raise UserError(f"{file}: cannot read the adapter weights ({err})") from None
    raise UserError(f"{folder} has {ADAPTER_CONFIG} but no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")


def _strip(key: str) -> str:
    key = key.removeprefix(PREFIX)
    for part in (".modules_to_save.default", ".original_module", ".base_layer"):
        key = key.replace(part, "")
    return key


def check_finite(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse an adapter with NaN or infinite values, naming the first such tensor."""
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            nans = int(torch.isnan(tensor).sum())
            raise UserError(
                f"{folder}: adapter tensor '{key}' holds {nans} NaN and {bad - nans} infinite values "
                f"(of {tensor.numel()}); merging it would write a broken model, so nothing was merged",
                hint="the training run diverged: merge an earlier checkpoint (OUTPUT_DIR/checkpoint-*) or "
                "retrain with a lower learning rate",
            )


def load_adapter(path: str | Path, *, trust_remote_code: bool = False) -> Adapter:
    """Read and check an adapter folder's config and tensors; every problem is a :class:`UserError` naming the
    file and key. Its metadata is read by :func:`sc2tune.runs.read_trained` before any tensor: a saved recipe
    saying ``model.trust_remote_code: true`` stops there unless ``trust_remote_code`` (the caller's say)."""
    folder = Path(path)
    config = read_adapter_json(folder)
    cfg_file = folder / ADAPTER_CONFIG
    _check_supported(config, cfg_file)
    trained = read_trained(folder, trust_remote_code=trust_remote_code)
    tensors = _load_weights(folder)
    check_declared(folder, config, tensors)
    check_finite(folder, tensors)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    full: dict[str, torch.Tensor] = {}
    magnitudes: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        magnitude_suffix = next((m for m in MAGNITUDE if key.endswith(m)), None)
        if magnitude_suffix is not None:
            magnitudes[key.removeprefix(PREFIX)[: -len(magnitude_suffix)]] = tensor
            continue
        for suffix, part, embedding in ((_LINEAR_A, "a", False), (_LINEAR_B, "b", False),
                                        (_EMBED_A, "a", True), (_EMBED_B, "b", True)):
            if key.endswith(suffix):
                module = key.removeprefix(PREFIX)[: -len(suffix)]
                entry = halves.setdefault(module, {})
                if "embedding" in entry and entry["embedding"] != embedding:
                    raise UserError(f"{folder}: module '{module}' has both linear and embedding LoRA factors")
                entry["embedding"] = embedding
                entry[part] = tensor
                break
        else:
            if ".lora_" in key:
                raise UserError(f"{folder}: adapter tensor '{key}' is of a kind this merge does not know",
                                hint="only plain LoRA (lora_A/lora_B, lora_embedding_A/B) can be merged")
            full[_strip(key)] = tensor
    lora: dict[str, LoraFactors] = {}
    for module, entry in halves.items():
        if "a" not in entry or "b" not in entry:
            raise UserError(f"{folder}: module '{module}' has only one of its two LoRA factors")
        a, b = entry["a"], entry["b"]
        r, scale = lora_scale(config, module)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise UserError(
                f"{folder}: LoRA factors of '{module}' have shapes A {tuple(a.shape)}, B {tuple(b.shape)} "
                f"but adapter_config.json says rank {r}",
                hint="the config and weights come from different adapters",
            )
        factors = LoraFactors(module, a, b, scale, bool(entry["embedding"]), bool(config.get("fan_in_fan_out")))
        magnitude = magnitudes.pop(module, None)
        if config.get("use_dora") and magnitude is None:
            raise UserError(f"{folder}: use_dora is set but module '{module}' has no lora_magnitude_vector",
                            hint="the adapter file is incomplete; save it again with PEFT")
        if magnitude is not None:
            features = factors.weight_shape[1] if factors.transposed else factors.weight_shape[0]
            if tuple(magnitude.shape) != (features,):
                raise UserError(f"{folder}: DoRA magnitude of '{module}' has shape {tuple(magnitude.shape)}, "
                                f"expected ({features},) for its LoRA factors")
            factors = dataclasses.replace(factors, magnitude=magnitude)
        lora[module] = factors
    if magnitudes:
        raise UserError(f"{folder}: DoRA magnitudes without LoRA factors: {', '.join(sorted(magnitudes))}")
    if not lora and not full:
        raise UserError(f"{folder}: the adapter holds no tensors")
    log.debug("adapter %s: %d LoRA modules, %d full tensors", folder, len(lora), len(full))
    return Adapter(folder, config, lora, full, trained)
