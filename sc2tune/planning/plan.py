"""Predict the memory one device needs to train a recipe, and what to change when it does not fit.

Total per device (single GPU or data parallel; every rank holds the same) =

    weights (load mode: bf16/fp16/fp32, int8, 4-bit NF4/FP4 + quantisation constants;
             QLoRA's k-bit preparation keeps the unquantised parts in fp32)
  + trainable parameters (LoRA A/B in fp32, PEFT's default; modules_to_save copies)
  + their gradients (same size) + optimizer states (AdamW: two fp32 moments; 8-bit: two bytes)
    (full fine-tuning of a 16-bit model loads its weights in fp32, the master copy the optimizer updates,
    and computes in 16 bits under autocast (``sc2tune.training.precision``): fp32 weights, fp32 gradients,
    fp32 moments, 16 bytes per parameter with AdamW; autocast's 16-bit weight copies are freed during the
    backward as the gradients arrive, so they add nothing to that peak)
  + saved activations (with or without gradient checkpointing)
  + max(logits and loss, one layer's backward workspace [+ its recomputation])
  + framework overhead (CUDA context, cuBLAS workspace: a fixed 0.75 GiB)

It fits when the total is at most 95% of the device memory (the caching allocator fragments).
The plan is for a CUDA device (dtype ``auto`` = bfloat16) unless ``device="cpu"`` (``auto`` = float32, no
CUDA overhead; tensor memory only, the process adds its libraries). Every position of a row is assumed
trained (the upper bound: an instruction recipe trains only the responses). The figures are per device for
one GPU or data parallel; FSDP full sharding over N GPUs is :mod:`sc2tune.planning.sharding` (``--gpus``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sc2tune.configs import model_layout
from sc2tune.planning.activations import (
    ComputeSetup,
    chunked_loss_bytes,
    estimate_activations,
    full_logits_loss_bytes,
)
from sc2tune.planning.structure import adapter_shape, block_spec, resolve_targets
from sc2tune.planning.weights import DTYPE_BYTES, LoadMode, weight_breakdown
from sc2tune.recipe import Recipe, recipe_from_dict
from sc2tune.sizes import parse_size

GiB = 1024**3
FRAMEWORK_OVERHEAD = int(0.75 * GiB)
FIT_FRACTION = 0.95

Device = Literal["cuda", "cpu"]

_MODE_OF_DTYPE = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


@dataclass(frozen=True)
class Component:
    """One line of the plan."""

    name: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class Suggestion:
    """A change to the recipe (as overrides) and the total it gives."""

    overrides: tuple[str, ...]
    description: str
    total_bytes: int
    fits: bool


@dataclass(frozen=True)
class MemoryPlan:
    """Predicted memory of one training device for a recipe (all sizes in bytes)."""

    model: str
    device: str
    method: str
    load_mode: str
    batch_size: int
    grad_accum: int
    max_length: int
    gradient_checkpointing: bool
    components: tuple[Component, ...]
    total_bytes: int
    #: the alternatives, shown side by side
    activations_no_checkpointing: int
    activations_checkpointing: int
    loss_chunked: int
    loss_full_logits: int
    weights_footprint: int  #: what transformers' get_memory_footprint() would report
    trainable_params: int
    gpu_memory: int | None = None
    fits: bool | None = None
    suggestions: tuple[Suggestion, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (bytes as integers)."""
        from dataclasses import asdict

        data = asdict(self)
        data["components"] = {c.name: c.bytes for c in self.components}
        data["notes"] = {c.name: c.note for c in self.components if c.note}
        return data


def _optimizer_bytes_per_param(optim: str) -> tuple[int, str]:
    name = optim.lower()
    if "8bit" in name:
        return 2, "two 8-bit moments"
    if "adafactor" in name:
        return 0, "factored second moment (negligible)"
    if name.startswith("sgd"):
        return 0, "no state"
    if "lion" in name or "adagrad" in name or "rmsprop" in name:
        return 4, "one fp32 moment"
    return 8, "two fp32 moments"


def model_dtype_name(recipe: Recipe, device: Device = "cuda") -> str:
    """The dtype the model is loaded in, by name: ``auto`` = bfloat16 on CUDA, float32 on CPU (as modeling does)."""
    if recipe.model.dtype == "auto":
        return "float32" if device == "cpu" else "bfloat16"
    return recipe.model.dtype


def load_mode(recipe: Recipe, device: Device = "cuda") -> LoadMode:
    """How the base weights are loaded: 16/32-bit, int8, or 4-bit."""
    quant = recipe.adapter.quantization
    if quant is None:
        return _MODE_OF_DTYPE[model_dtype_name(recipe, device)]  # type: ignore[return-value]
    if quant.bits == 8:
        return "int8"
    return quant.quant_type  # type: ignore[return-value]


def plan_device(recipe: Recipe, gpu_memory: int | str | None = None, *, device: Device = "cuda") -> MemoryPlan:
    """Predict the per-device training memory of ``recipe``; with ``gpu_memory``, whether it fits.

    Ways to make it fit are added above this module (:func:`sc2tune.planning.recipe_plan.plan_recipe`), since
    finding them plans modified recipes with this function."""
    from sc2tune.modeling import CHUNKED_LOSS_ARCHITECTURES

    spec, adapter, train, data = recipe.model, recipe.adapter, recipe.train, recipe.data
    dtype = model_dtype_name(recipe, device)
    classify = spec.head == "sequence-classification"
    model = model_layout(spec.name_or_path, revision=spec.revision, trust_remote_code=spec.trust_remote_code,
                         head=spec.head, num_labels=spec.num_labels or 2)
    dtype_bytes = DTYPE_BYTES[dtype]  # the compute dtype (activations, gathered FSDP units)
    full = adapter.method == "full"
    master = full and dtype_bytes != 4  # fp32 master weights: loaded in fp32, computed in `dtype`
    mode = "fp32" if master else load_mode(recipe, device)
    quantized = mode in ("int8", "nf4", "fp4")
    double_quant = bool(adapter.quantization and adapter.quantization.double_quant)
    weights = weight_breakdown(model, mode, dtype=dtype, skip_modules=["score"] if classify else None,
                               double_quant=double_quant, upcast_unquantized=quantized)
    targets = () if full else resolve_targets(model, adapter.target_modules)
    to_save = list(adapter.modules_to_save or []) + (["score"] if classify else [])
    shape = adapter_shape(model, targets, r=adapter.r, dora=adapter.use_dora, modules_to_save=to_save)
    state_bytes, state_note = _optimizer_bytes_per_param(train.optim)

    comps: list[Component] = []
    kept = "embeddings, norms, biases" + (", score head" if classify else ", lm_head")
    note = {"int8": f"int8 linears; {kept} stay 16-bit", "nf4": f"NF4 linears; {kept} stay unquantised",
            "fp4": f"FP4 linears; {kept} stay unquantised"}.get(mode, f"all weights {mode}")
    if quantized:
        note += " (fp32 after k-bit preparation)"
    if master:
        note = f"fp32 master weights, computed in {dtype} under autocast"
    comps.append(Component("weights", weights.footprint_bytes, note))
    if weights.quant_state_bytes:
        qnote = ("absmax per 64-block: uint8 + fp32 per 256 blocks (double quant)" if double_quant and mode != "int8"
                 else "fp32 absmax per 64-block" if mode != "int8" else "fp32 scale per output row")
        comps.append(Component("quantisation constants", weights.quant_state_bytes, qnote))
    if full:
        n = weights.params
        comps.append(Component("gradients", n * 4 if master else n * dtype_bytes,
                               "every weight is trained" + (" (fp32, as its master weight)" if master else "")))
        comps.append(Component("optimizer states", n * state_bytes, state_note))
        trainable = n
    else:
        saved_bytes = 4 if quantized else dtype_bytes
        train_bytes = shape.lora_params * 4 + shape.saved_module_params * saved_bytes
        trainable = shape.lora_params + shape.saved_module_params
        comps.append(Component("adapter parameters", train_bytes,
                               f"LoRA r={adapter.r} on {len(targets)} linears (fp32)"
                               + (", DoRA magnitudes" if adapter.use_dora else "")
                               + (f"; trained copies of {', '.join(to_save)}" if to_save else "")))
        comps.append(Component("gradients", train_bytes, "same size as the trained parameters"))
        comps.append(Component("optimizer states", trainable * state_bytes, state_note))

    block, layers = block_spec(model, targets, full=full)
    attn = "eager" if spec.attn_implementation == "eager" else "sdpa"
    make_setup = ComputeSetup.gpu if device == "cuda" else ComputeSetup.cpu
    setup = make_setup(dtype_bytes, fp32_residual=quantized, attn=attn)
    batch, length = train.batch_size, data.max_length
    acts = estimate_activations(block, layers=layers, batch=batch, length=length, r=adapter.r,
                                lora_dropout=0.0 if full else adapter.dropout, setup=setup,
                                dora=adapter.use_dora and not full)
    tokens = batch * length
    vocab = int(model.vocab_size or 0)
    if classify:
        loss = loss_full = tokens * (spec.num_labels or 2) * 4 * 3
        loss_chunk = loss
        loss_note = "score head on every position (small)"
    else:
        loss_full = full_logits_loss_bytes(tokens=tokens, vocab=vocab, setup=setup)
        loss_chunk = chunked_loss_bytes(trained=tokens, hidden=block.hidden, vocab=vocab,
                                        chunk=train.loss_chunk_size, setup=setup)
        if train.loss_impl == "chunked" and model.model_type in CHUNKED_LOSS_ARCHITECTURES:
            loss = loss_chunk
            loss_note = (f"chunked, {train.loss_chunk_size} positions at a time; full logits would take "
                         f"{loss_full / GiB:.2f} GiB")
        else:
            loss = loss_full
            loss_note = ("full logits (train.loss_impl: plain)" if train.loss_impl == "plain"
                         else f"full logits (no chunked loss for {model.model_type})")
    ckpt = train.gradient_checkpointing
    comps.append(Component("activations", acts.saved(ckpt),
                           f"{layers} layers x batch {batch} x {length} tokens, "
                           + ("checkpointed: layer inputs only" if ckpt else "no checkpointing")))
    comps.append(Component("logits and loss", loss, loss_note))
    back = acts.backward_extra(ckpt)
    comps.append(Component("backward workspace", back,
                           "one layer's gradients" + (" + its recomputed activations" if ckpt else "")))
    if device == "cuda":
        comps.append(Component("framework overhead", FRAMEWORK_OVERHEAD, "CUDA context and kernels' workspace"))
    peak_extra = max(loss, back)
    total = sum(c.bytes for c in comps if c.name not in ("logits and loss", "backward workspace")) + peak_extra

    gpu = parse_size(gpu_memory, what="--gpu-memory") if isinstance(gpu_memory, str) else gpu_memory
    fits = None if gpu is None else total <= FIT_FRACTION * gpu
    return MemoryPlan(
        model=spec.name_or_path, device=device, method=adapter.method, load_mode=mode, batch_size=batch,
        grad_accum=train.grad_accum, max_length=length, gradient_checkpointing=ckpt, components=tuple(comps),
        total_bytes=total, activations_no_checkpointing=acts.saved(False), activations_checkpointing=acts.saved(True),
        loss_chunked=loss_chunk, loss_full_logits=loss_full, weights_footprint=weights.footprint_bytes,
        trainable_params=trainable, gpu_memory=gpu, fits=fits,
    )


def modified(recipe: Recipe, overrides: tuple[str, ...]) -> Recipe:
    """``recipe`` with ``key.sub=value`` overrides applied (re-validated)."""
    return recipe_from_dict(recipe.model_dump(mode="json"), source="<plan>", overrides=list(overrides))
