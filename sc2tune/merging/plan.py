"""Decide, before any byte is written, what every output tensor is made of.

For each weight of the output model the plan names its source (a base tensor, an adapter
replacement, or both), the LoRA update to add, whether it first goes through the 4-bit round trip,
and its output dtype. Every mismatch between adapter and base (unknown module, wrong shape, missing
weight) is found here, so a bad adapter fails before the output folder exists.

Tied embeddings (StarCoder2 3B/7B): the checkpoint stores only ``model.embed_tokens.weight`` and the
model reuses it as ``lm_head.weight``. When an adapter changes one of the two (a LoRA on ``lm_head`` or
``embed_tokens``, or a ``modules_to_save`` copy), the adapter model computes with two different
matrices, so the output is untied: ``tie_word_embeddings: false`` and both weights written. They stay
tied only when the adapter's change is provably the same for both (PEFT's ``ensure_weight_tying``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field

import torch
from transformers import PretrainedConfig

from sc2tune.errors import UserError
from sc2tune.merging.adapter import Adapter, LoraFactors
from sc2tune.merging.checkpoint import BaseCheckpoint, Skeleton, skeleton
from sc2tune.merging.writer import OutTensor
from sc2tune.recipe import QuantSpec

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Source:
    """How one output tensor is computed: ``round(rt(replace or base) + delta)``."""

    out: OutTensor
    base_key: str | None  # tensor read from the base checkpoint
    replace: str | None  # adapter tensor that replaces the base tensor (modules_to_save, base_layer copy)
    lora: LoraFactors | None  # update added in float32
    round_trip: bool  # pass the weight through the QLoRA 4-bit round trip first


@dataclass
class MergePlan:
    """Everything the streaming pass needs, fixed before it starts."""

    sources: list[Source]
    config: PretrainedConfig  # config of the output model
    classifier: bool
    untied: bool
    quant: QuantSpec | None  # set when merging into the 4-bit round trip
    quant_dtype: str | None = None  # the dtype the round trip starts from (None: each weight's own)
    notes: list[str] = field(default_factory=list)


def _resolve(name: str, params: dict[str, tuple[int, ...]], aliases: dict[str, str]) -> str | None:
    for candidate in (name, f"model.{name}"):
        candidate = aliases.get(candidate, candidate)
        if candidate in params:
            return candidate
    return None


def _same_tied_update(adapter: Adapter, sk: Skeleton) -> bool:
    """True when the adapter changes the tied input and output embeddings identically."""
    emb, head = sk.input_embedding, sk.output_embedding
    lora_e, lora_h = adapter.lora.get(emb), adapter.lora.get(head or "")
    full_e, full_h = adapter.full.get(f"{emb}.weight"), adapter.full.get(f"{head}.weight")
    if (full_e is None) != (full_h is None) or (lora_e is None) != (lora_h is None):
        return False
    if full_e is not None and not torch.equal(full_e, full_h):
        return False
    if lora_e is not None:
        assert lora_h is not None
        if lora_e.magnitude is not None or lora_h.magnitude is not None:
            return False  # DoRA norms run over different axes of the two layouts
        if lora_e.embedding == lora_h.embedding:
            return False
        same = (torch.equal(lora_h.a, lora_e.b.T) and torch.equal(lora_h.b, lora_e.a.T)) if lora_e.embedding \
            else (torch.equal(lora_e.a, lora_h.b.T) and torch.equal(lora_e.b, lora_h.a.T))
        return same and lora_e.scale == lora_h.scale
    return True


def _output_config(ckpt: BaseCheckpoint, adapter: Adapter, dtype: torch.dtype,
                   id2label: dict[int, str] | None) -> PretrainedConfig:
    config = copy.deepcopy(ckpt.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = dtype
    if adapter.is_classifier:
        head = next((t for n, t in adapter.full.items() if n.split(".")[-2:] == ["score", "weight"]), None)
        if head is None:
            raise UserError(
                f"{adapter.path}: a sequence-classification adapter without its 'score' head",
                hint="the head must be trained and saved (modules_to_save=['score']); without it the merged "
                "model would serve a random head",
            )
        num_labels = int(head.shape[0])
        labels = id2label or {}
        if len(labels) != num_labels:
            labels = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.num_labels = num_labels
        config.id2label = {int(k): str(v) for k, v in labels.items()}
        config.label2id = {str(v): int(k) for k, v in labels.items()}
    return config


def build_plan(adapter: Adapter, ckpt: BaseCheckpoint, *, dtype: torch.dtype, quant: QuantSpec | None,
               id2label: dict[int, str] | None = None) -> MergePlan:
    """Match the adapter to the base, decide tying and the round trip, and order the output tensors.

    ``quant`` set = merge into the 4-bit round trip of every Linear weight QLoRA quantised, starting from the
    dtype the run loaded its base in (:attr:`Adapter.quant_dtype`). The layout is built as the checkpoint's
    source allows (its own code only when trusted: :func:`~sc2tune.merging.checkpoint.skeleton`).
    """
    classifier = adapter.is_classifier
    trust = ckpt.source.trust_remote_code
    config = _output_config(ckpt, adapter, dtype, id2label)
    sk = skeleton(config, classifier=classifier, trust_remote_code=trust)
    notes: list[str] = []
    untied = False
    if sk.tied:
        touched = {sk.input_embedding, sk.output_embedding}
        changes = any(m in touched for m in adapter.lora) or any(n.rsplit(".", 1)[0] in touched
                                                                  for n in adapter.full)
        if changes and not _same_tied_update(adapter, sk):
            untied = True
            config.tie_word_embeddings = False
            sk = skeleton(config, classifier=classifier, trust_remote_code=trust)
            notes.append(f"untied {sk.output_embedding}.weight from {sk.input_embedding}.weight: the adapter "
                         "changes them differently (tie_word_embeddings: false in the output)")
    aliases: dict[str, str] = {}
    if sk.tied and sk.output_embedding:
        aliases[f"{sk.output_embedding}.weight"] = f"{sk.input_embedding}.weight"

    lora_by_param: dict[str, LoraFactors] = {}
    for module, factors in adapter.lora.items():
        target = _resolve(f"{module}.weight", sk.params, aliases)
        if target is None:
            raise UserError(
                f"{adapter.path}: the adapter adapts '{module}', which the base model "
                f"({config.model_type}, {ckpt.path}) does not have",
                hint="this adapter was trained on another architecture; pass --base with its real base model",
            )
        if target in lora_by_param:  # tied pair with the same update: apply it once
            continue
        if sk.params[target] != factors.weight_shape:
            raise UserError(
                f"{adapter.path}: the LoRA update of '{module}' has shape {factors.weight_shape} but the base "
                f"weight '{target}' is {sk.params[target]}",
                hint="the adapter belongs to a base of another size; pass --base with its real base model",
            )
        lora_by_param[target] = factors
    replace_by_param: dict[str, str] = {}
    for name, tensor in adapter.full.items():
        target = _resolve(name, sk.params, aliases)
        if target is None:
            raise UserError(f"{adapter.path}: saved tensor '{name}' matches no weight of the base model",
                            hint="this adapter was trained on another architecture")
        if sk.params[target] != tuple(tensor.shape):
            raise UserError(
                f"{adapter.path}: saved tensor '{name}' has shape {tuple(tensor.shape)} but the model's "
                f"'{target}' is {sk.params[target]} (a resized vocabulary or another base size)",
                hint="pass --base with the base model the adapter was trained on",
            )
        replace_by_param.setdefault(target, name)

    skip_quant = {sk.output_embedding, "score"}
    order = {key: i for i, key in enumerate(ckpt.tensors)}
    sources: list[Source] = []
    for name, shape in sk.params.items():
        base_key: str | None = name if name in ckpt.tensors else None
        if base_key is None and untied and name == f"{sk.output_embedding}.weight":
            base_key = f"{sk.input_embedding}.weight"
        replace = replace_by_param.get(name)
        if base_key is None and replace is None:
            raise UserError(f"base checkpoint {ckpt.path} has no tensor '{name}'",
                            hint="the checkpoint is incomplete or does not match its config.json")
        if base_key is not None and ckpt.tensors[base_key].shape != shape:
            raise UserError(f"{ckpt.path}: tensor '{base_key}' is {ckpt.tensors[base_key].shape} but "
                            f"config.json implies {shape}")
        src_dtype = ckpt.tensors[base_key].dtype if base_key else adapter.full[replace].dtype  # type: ignore[index]
        module = name.rsplit(".", 1)[0]
        round_trip = (quant is not None and name.endswith(".weight") and module in sk.linear_modules
                      and module not in skip_quant and replace is None)
        out_dtype = dtype if src_dtype.is_floating_point else src_dtype
        sources.append(Source(OutTensor(name, shape, out_dtype), base_key, replace, lora_by_param.get(name),
                              round_trip))
    # read the base in checkpoint order; tensors with no base tensor of their own go last
    sources.sort(key=lambda s: (order.get(s.base_key, len(order)) if s.base_key else len(order),
                                s.base_key != s.out.name))
    dropped = [k for k in ckpt.tensors if k not in sk.params and k not in aliases]
    if dropped:
        log.info("not written (no such weight in the output model): %s", ", ".join(dropped[:5])
                 + (" ..." if len(dropped) > 5 else ""))
    if quant is not None:
        notes.append(f"merged into the {quant.quant_type.upper()} round trip of the base Linear weights "
                     "(what the QLoRA adapter was trained against)")
    return MergePlan(sources, config, classifier, untied, quant, adapter.quant_dtype, notes)
