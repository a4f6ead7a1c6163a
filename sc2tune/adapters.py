"""LoRA / QLoRA adapters from the recipe.

LoRA replaces each targeted linear map ``y = W x`` by ``y = W x + s * B (A dropout(x))`` with ``A`` (r x in),
``B`` (out x r, initialised to zero) and ``s = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA). Only ``A`` and
``B`` (and ``modules_to_save`` such as the classification ``score`` head) are trained. QLoRA is the same on a
base whose linear weights are stored in 4-bit NF4 and de-quantised on the fly.

Initialisation (``adapter.init``): ``default`` draws A (Kaiming-uniform) and sets B = 0, so training starts
from the base model; ``gaussian`` draws A ~ N(0, 1/r). PiSSA and OLoRA start from the principal part of ``W``
instead: with ``W = U S V^T`` (PiSSA; ``pissa_niter_N`` a randomised SVD with N subspace iterations) the top-r
part gives ``B0 = U_r sqrt(S_r) / sqrt(s)``, ``A0 = sqrt(S_r) V_r^T / sqrt(s)`` (OLoRA: the first r columns of
a QR decomposition), and the frozen base becomes the residual ``W_res = W - s B0 A0``, so the model is unchanged
at step 0. After training ``W_res + s B A = W + s (B A - B0 A0) = W + s [B | -B0] [A ; A0]``: a plain LoRA
update of rank 2r on the *original* ``W``, which is how these adapters are saved (PEFT's
``path_initial_model_for_weight_conversion``; :func:`keep_initial_adapter` keeps ``A0``, ``B0`` for it), with
the ``modules_to_save`` (a classifier's ``score`` head) saved as trained next to the converted factors.
LoftQ (QLoRA only) keeps the 4-bit base ``Q = dequant(quant(W))`` as it is and sets ``s B0 A0`` to the rank-r SVD
of the quantisation error ``W - Q`` (what PEFT's GPU-only ``replace_lora_weights_loftq`` does), so training
starts nearer ``W``;
the adapter applies to the usual 4-bit load of the original checkpoint, no conversion needed.

A target name that matches no module is an error listing the model's linear layers: copying Llama's
``gate_proj/up_proj/down_proj`` onto StarCoder2 (whose MLP is ``c_fc``/``c_proj``) must not silently adapt
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sc2tune.atomic import staged_dir, staged_file
from sc2tune.errors import RecipeError, UserError
from sc2tune.modeling import default_target_modules
from sc2tune.recipe import Recipe
from sc2tune.runs import ADAPTER_CONFIG, ADAPTER_WEIGHTS, RunFolder, resolve_base
from sc2tune.runs.layout import INITIAL_ADAPTER

if TYPE_CHECKING:  # peft, torch and transformers load where they are used: the target check needs none of them
    from peft import LoraConfig, PeftModel
    from torch import nn
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)

def linear_layer_names(model: nn.Module) -> list[str]:
    """Distinct last-component names of the model's linear layers (bitsandbytes ones included)."""
    from torch import nn

    names: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt"}:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def _checked_targets(recipe: Recipe, model_type: str, module_names: list[str],
                     linear_names: Callable[[], list[str]]) -> list[str] | str:
    """``adapter.target_modules`` resolved (``auto``) and each name matched against ``module_names``
    (exact or ``.suffix``, as PEFT matches); the error lists ``linear_names()``."""
    targets = recipe.adapter.target_modules
    if targets == "all-linear":
        return "all-linear"
    if targets == "auto":
        return default_target_modules(model_type)
    missing = [
        target for target in targets
        if not any(name == target or name.endswith("." + target) for name in module_names)
    ]
    if missing:  # a recipe key with a bad value: exit 2 like every other recipe error
        raise RecipeError(
            f"adapter.target_modules: {', '.join(missing)} match no module of this "
            f"{model_type} model",
            hint=f"its linear layers are: {', '.join(linear_names())}"
            + (" (StarCoder2's MLP is c_fc/c_proj, there is no gate/up/down_proj)"
               if model_type == "starcoder2" else ""),
        )
    return list(targets)


def lora_config(model: PreTrainedModel, recipe: Recipe) -> LoraConfig:
    """PEFT LoraConfig for the recipe, its targets checked against the model (``auto`` and ``all-linear``
    resolve here); classification saves the ``score`` head in full."""
    from peft import LoraConfig, TaskType

    spec = recipe.adapter
    classify = recipe.task == "classify"
    modules_to_save = list(spec.modules_to_save or [])
    if classify and "score" not in modules_to_save:
        modules_to_save.append("score")
    targets = _checked_targets(recipe, model.config.model_type, [name for name, _ in model.named_modules()],
                               lambda: linear_layer_names(model))
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
        modules_to_save=modules_to_save or None,
        bias="none",
        task_type=TaskType.SEQ_CLS if classify else TaskType.CAUSAL_LM,
        init_lora_weights=True if spec.init in ("default", "loftq") else spec.init,  # LoftQ is applied after
    )


def attach_adapter(model: PreTrainedModel, recipe: Recipe) -> PreTrainedModel | PeftModel:
    """Wrap the base model for training: LoRA/QLoRA adapter, or every weight trainable for ``full``."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    gradient_checkpointing = recipe.train.gradient_checkpointing
    if recipe.adapter.method == "full":
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
    if recipe.adapter.quantization is not None:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    peft_model = get_peft_model(model, lora_config(model, recipe))
    if recipe.adapter.init == "loftq":
        _loftq_init(peft_model, recipe)
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("trainable parameters: %s of %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model


def _loftq_init(peft_model: PeftModel, recipe: Recipe) -> None:
    """LoftQ on a fixed bitsandbytes base: ``s B0 A0`` = the rank-r SVD of ``W - dequant(quant(W))`` per 4-bit layer.

    With ``W - Q = U S V^T``: ``B0 = U_r sqrt(S_r) / sqrt(s)``, ``A0 = sqrt(S_r) V_r^T / sqrt(s)``, so
    ``Q + s B0 A0`` is the best rank-r correction of the 4-bit weight towards ``W`` (one LoftQ step with the
    quantisation kept as bitsandbytes made it). ``W`` is read tensor by tensor from the checkpoint's safetensors.
    (PEFT's ``replace_lora_weights_loftq`` computes the same up to the ``1/sqrt(s)`` but only on a GPU.)
    """
    import bitsandbytes as bnb
    import torch
    from safetensors import safe_open

    folder = resolve_base(recipe.model.name_or_path, revision=recipe.model.revision)  # a hub base: its snapshot
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        import json

        files = {k: folder / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    elif (folder / "model.safetensors").is_file():
        with safe_open(str(folder / "model.safetensors"), framework="pt") as handle:
            files = dict.fromkeys(handle.keys(), folder / "model.safetensors")
    else:
        raise UserError(f"adapter.init loftq reads the unquantised weights from safetensors files, and {folder} "
                        "has none", hint="use adapter.init default, or convert the base to safetensors")
    prefix = "base_model.model."
    done = 0
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        base = module.get_base_layer()
        if type(base).__name__ != "Linear4bit":
            continue
        key = name.removeprefix(prefix) + ".weight"
        if key not in files:
            raise UserError(f"adapter.init loftq: {folder} has no tensor '{key}' to fit the 4-bit error of")
        with safe_open(str(files[key]), framework="pt") as handle:
            weight = handle.get_tensor(key).to(torch.float32)
        quantized = bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state).to(torch.float32)
        u, sv, vh = torch.linalg.svd(weight - quantized.reshape(weight.shape), full_matrices=False)
        r, scale = module.r["default"], module.scaling["default"]
        root = (sv[:r] / scale).sqrt()
        lora_a, lora_b = module.lora_A["default"].weight, module.lora_B["default"].weight
        with torch.no_grad():
            lora_b.copy_((u[:, :r] * root).to(lora_b.dtype))
            lora_a.copy_((root[:, None] * vh[:r]).to(lora_a.dtype))
        done += 1
    if not done:
        raise UserError("adapter.init loftq found no 4-bit LoRA layer to initialise",
                        hint="LoftQ needs adapter.method qlora")
    log.info("LoftQ: %d layers start at the rank-%d SVD of their 4-bit quantisation error", done, recipe.adapter.r)


def keep_initial_adapter(model: PreTrainedModel | PeftModel, recipe: Recipe, out: Path, *,
                         main_process: bool) -> Path | None:
    """For PiSSA/OLoRA runs (saved converted, to apply to the original base), the starting factors A0, B0 saved
    before any step for that conversion (written once, under ``OUTPUT_DIR/.sc2tune-init``, kept across
    resumes); None for every other run. The saved config says ``init_lora_weights: true`` so that loading it
    does not decompose the base again."""
    from peft import PeftModel

    init = recipe.adapter.init
    if not (init == "olora" or init.startswith("pissa")) or not isinstance(model, PeftModel):
        return None
    initial = RunFolder(out).initial_adapter
    if main_process and not (initial / ADAPTER_CONFIG).is_file():
        config: LoraConfig = model.peft_config["default"]  # type: ignore[assignment]
        live = config.init_lora_weights
        config.init_lora_weights = True
        try:
            with staged_dir(initial.parent, replace=True) as tmp:  # replaces a killed run's incomplete one
                model.save_pretrained(str(tmp / INITIAL_ADAPTER))
        finally:
            config.init_lora_weights = live
    return initial


def save_converted_adapter(model: PeftModel, folder: Path, initial: Path) -> None:
    """Save a PiSSA/OLoRA adapter as a rank-2r LoRA on the original base: ``[B | -B0] [A ; A0]``.

    PEFT's conversion (``subtract_mutated_init``) returns the LoRA factors only, so every other tensor the
    adapter holds (``modules_to_save``, such as a classifier's ``score`` head) is put back here exactly as
    trained: those modules replace the base's own, they are not residual, so they need no conversion.
    The same holds for the factors of an embedding target (``lora_embedding_A``/``_B``): PEFT's PiSSA/OLoRA
    initialise only linear layers (an embedding starts at ``B0 A0 = 0``, its base untouched), so ``B A`` is already
    the update on the original embedding; it is zero-padded to the converted rank, ``[B | 0] [A ; 0] = B A``
    (the written config doubles ``r`` and ``alpha``, keeping the scale).
    """
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    config: LoraConfig = model.peft_config["default"]  # type: ignore[assignment]
    r, alpha, init = config.r, config.lora_alpha, config.init_lora_weights
    kept = {}
    for name, tensor in get_peft_model_state_dict(model).items():
        if "lora_A" in name or "lora_B" in name:
            continue
        tensor = tensor.detach().contiguous().cpu()
        if "lora_embedding_A" in name:  # (r, vocab) -> (2r, vocab)
            tensor = torch.cat([tensor, torch.zeros_like(tensor)], dim=0)
        elif "lora_embedding_B" in name:  # (hidden, r) -> (hidden, 2r)
            tensor = torch.cat([tensor, torch.zeros_like(tensor)], dim=1)
        kept[name] = tensor
    try:
        model.save_pretrained(str(folder), path_initial_model_for_weight_conversion=str(initial))
    finally:  # PEFT doubles r/alpha on the config it writes; keep the live one as trained
        config.r, config.lora_alpha, config.init_lora_weights = r, alpha, init
    if kept:
        weights = folder / ADAPTER_WEIGHTS[0]  # save_pretrained writes safetensors by default
        tensors = load_file(str(weights))
        tensors.update(kept)
        with staged_file(weights) as staged:
            save_file(tensors, str(staged), metadata={"format": "pt"})


def base_model_reference(name_or_path: str) -> str:
    """How an adapter names its base: an existing local folder as an absolute path, anything else as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def check_target_modules(recipe: Recipe) -> str:
    """Check ``adapter.target_modules`` against the base architecture's module names (no weights).

    Works offline for local folders, the built-in model and the bundled StarCoder2/StarCoder configs;
    returns a one-line note (raises :class:`UserError` when a target matches nothing). The names come from
    :func:`sc2tune.configs.model_layout`: written down from config.json for StarCoder2/GPTBigCode (no torch),
    read off the meta-device model for other architectures.
    """
    from sc2tune.configs import model_layout, shipped_config_path
    from sc2tune.tiny import is_tiny

    name = recipe.model.name_or_path
    if recipe.adapter.method == "full":
        return "no adapter targets (full fine-tuning)"
    offline = is_tiny(name) or Path(name).expanduser().exists() or shipped_config_path(name) is not None
    if not offline:
        return f"targets of {name} not checked (config not available offline)"
    layout = model_layout(name, trust_remote_code=recipe.model.trust_remote_code, head=recipe.model.head)
    linear = sorted({m.name.rsplit(".", 1)[-1] for m in layout.modules if m.kind in ("linear", "linear-subclass")})
    targets = _checked_targets(recipe, layout.model_type, layout.module_names(), lambda: linear)
    return f"targets ok ({targets if isinstance(targets, str) else ' '.join(targets)})"
