"""LoRA / QLoRA adapters from the recipe.

LoRA replaces each targeted linear map ``y = W x`` by ``y = W x + s * B (A dropout(x))`` with ``A`` (r x in),
``B`` (out x r, initialised to zero) and ``s = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA). Only ``A`` and
``B`` (and ``modules_to_save`` such as the classification ``score`` head) are trained. QLoRA is the same on a
base whose linear weights are stored in 4-bit NF4 and de-quantised on the fly.

A target name that matches no module is an error listing the model's linear layers: copying Llama's
``gate_proj/up_proj/down_proj`` onto StarCoder2 (whose MLP is ``c_fc``/``c_proj``) must not silently adapt
nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import PreTrainedModel

from sc2tune.errors import RecipeError
from sc2tune.modeling import default_target_modules
from sc2tune.recipe import Recipe

log = logging.getLogger(__name__)

def linear_layer_names(model: nn.Module) -> list[str]:
    """Distinct last-component names of the model's linear layers (bitsandbytes ones included)."""
    names: set[str] = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) or type(module).__name__ in {"Linear4bit", "Linear8bitLt"}:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_target_modules(model: PreTrainedModel, recipe: Recipe) -> list[str] | str:
    """The recipe's target list, checked against the model: ``auto`` and ``all-linear`` resolve here."""
    targets = recipe.adapter.target_modules
    if targets == "all-linear":
        return "all-linear"
    if targets == "auto":
        return default_target_modules(model.config.model_type)
    module_names = [name for name, _ in model.named_modules()]
    missing = [
        target for target in targets
        if not any(name == target or name.endswith("." + target) for name in module_names)
    ]
    if missing:  # a recipe key with a bad value: exit 2 like every other recipe error
        raise RecipeError(
            f"adapter.target_modules: {', '.join(missing)} match no module of this "
            f"{model.config.model_type} model",
            hint=f"its linear layers are: {', '.join(linear_layer_names(model))}"
            + (" (StarCoder2's MLP is c_fc/c_proj, there is no gate/up/down_proj)"
               if model.config.model_type == "starcoder2" else ""),
        )
    return list(targets)


def lora_config(model: PreTrainedModel, recipe: Recipe) -> LoraConfig:
    """PEFT LoraConfig for the recipe (classification saves the ``score`` head in full)."""
    spec = recipe.adapter
    classify = recipe.task == "classify"
    modules_to_save = list(spec.modules_to_save or [])
    if classify and "score" not in modules_to_save:
        modules_to_save.append("score")
    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=resolve_target_modules(model, recipe),
        use_rslora=spec.use_rslora,
        use_dora=spec.use_dora,
        modules_to_save=modules_to_save or None,
        bias="none",
        task_type=TaskType.SEQ_CLS if classify else TaskType.CAUSAL_LM,
    )


def attach_adapter(model: PreTrainedModel, recipe: Recipe) -> PreTrainedModel | PeftModel:
    """Wrap the base model for training: LoRA/QLoRA adapter, or every weight trainable for ``full``."""
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
    trainable, total = peft_model.get_nb_trainable_parameters()
    log.info("trainable parameters: %s of %s (%.3f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)
    return peft_model


def base_model_reference(name_or_path: str) -> str:
    """How an adapter names its base: an existing local folder as an absolute path, anything else as given."""
    path = Path(name_or_path).expanduser()
    return str(path.resolve()) if path.is_dir() else name_or_path


def check_target_modules(recipe: Recipe) -> str:
    """Check ``adapter.target_modules`` against the base architecture built on the meta device (no weights).

    Works offline for local folders, the built-in model and the bundled StarCoder2/StarCoder configs;
    returns a one-line note (raises :class:`UserError` when a target matches nothing).
    """
    from sc2tune.planning.configs import load_config, meta_model, shipped_config_path
    from sc2tune.tiny import is_tiny

    name = recipe.model.name_or_path
    if recipe.adapter.method == "full":
        return "no adapter targets (full fine-tuning)"
    offline = is_tiny(name) or Path(name).expanduser().exists() or shipped_config_path(name) is not None
    if not offline:
        return f"targets of {name} not checked (config not available offline)"
    config = load_config(name, trust_remote_code=recipe.model.trust_remote_code)
    model = meta_model(config, head=recipe.model.head)
    targets = resolve_target_modules(model, recipe)
    return f"targets ok ({targets if isinstance(targets, str) else ' '.join(targets)})"
