"""Shared builders for the merge tests: synthetic sharded StarCoder2 bases and PEFT-made adapters.

References stay independent of the merge code: adapters come from PEFT (``get_peft_model``, factors
randomised so the update is not zero), expected weights from PEFT's ``merge_and_unload``, expected
logits from ``PeftModel`` in eval mode (4-bit through bitsandbytes for QLoRA), and merged folders are
loaded with plain transformers.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BitsAndBytesConfig,
    Starcoder2ForCausalLM,
)

from sc2tune.tiny import tiny_config

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]
#: Prompt ids (real StarCoder2 tokens) the logits of :func:`adapter_logits` and :func:`merged_logits` are taken on.
IDS = torch.tensor([[1, 755, 3207, 26, 83, 731, 3, 1079, 2, 4650, 317, 2284, 0, 88]])


def synthetic_base(folder: Path, *, hidden: int = 64, layers: int = 2, vocab: int = 512, seed: int = 3,
                   dtype: torch.dtype = torch.bfloat16, shard: str = "100KB", tied: bool = True) -> Path:
    """A random StarCoder2 (no tokenizer, small vocabulary) saved in several ``dtype`` shards."""
    config = tiny_config()
    config.tie_word_embeddings = tied
    config.hidden_size, config.intermediate_size, config.num_hidden_layers = hidden, 4 * hidden, layers
    config.vocab_size = vocab
    torch.manual_seed(seed)
    Starcoder2ForCausalLM(config).to(dtype).save_pretrained(folder, max_shard_size=shard)
    return folder


def bnb4(classifier: bool = False) -> BitsAndBytesConfig:
    """The QLoRA base: NF4, double quant, float32 compute (a classifier's ``score`` head stays unquantised)."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32,
                              llm_int8_skip_modules=["score"] if classifier else None)


def load_base(base: Path, *, classifier: bool = False, quantized: bool = False,
              dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """``base`` with plain transformers: a causal LM or a 3-label classifier (pad id 4), 4-bit for ``quantized``."""
    kwargs: dict = {"dtype": dtype}
    if classifier:
        kwargs.update(num_labels=3, pad_token_id=4)
    if quantized:
        kwargs.update(quantization_config=bnb4(classifier), device_map={"": "cpu"})
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    return loader.from_pretrained(base, **kwargs)


def peft_eval_model(base: Path, adapter: Path, **load: object) -> PeftModel:
    """PEFT's adapter model on :func:`load_base` in eval mode, computing as training does."""
    model = PeftModel.from_pretrained(load_base(base, **load), adapter).eval()  # type: ignore[arg-type]
    for module in model.modules():  # bitsandbytes' bf16 CPU inference kernel is not what training computes
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def peft_adapter(base: Path, out: Path, *, seed: int = 0, std: float = 0.2, quantized: bool = False,
                 **lora: object) -> Path:
    """Save a PEFT LoRA adapter (LoraConfig ``lora``) for ``base`` with random non-zero factors.

    DoRA magnitudes are moved off their initial value (the base norm) by a random factor around 1.
    """
    model = load_base(base, quantized=quantized)
    lora.setdefault("target_modules", LINEARS)
    config = LoraConfig(r=lora.pop("r", 4), lora_alpha=lora.pop("lora_alpha", 8), lora_dropout=0.0, **lora)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                param.mul_(1 + 0.2 * torch.randn_like(param))
            elif "lora_" in name:
                param.normal_(0, std)
    peft_model.save_pretrained(out)
    return out


def peft_merged_state(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """PEFT's float32 ``merge_and_unload`` of ``adapter`` on ``base`` (loaded in float32)."""
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)
    return {k: v.detach() for k, v in model.merge_and_unload().state_dict().items()}


def peft_logits(base: Path, adapter: Path, ids: torch.Tensor, *, quantized: bool = False) -> torch.Tensor:
    """Logits of PEFT's adapter model in eval mode (a 4-bit base for ``quantized``)."""
    model = peft_eval_model(base, adapter, quantized=quantized)
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def make_adapter(base: Path, out: Path, *, classifier: bool = False, seed: int = 0, recipe: dict | None = None,
                 quantized: bool = False, **lora: object) -> Path:
    """Save a PEFT LoRA adapter with random (non-zero) factors for ``base`` (dropout 0.1, saved heads randomised
    too), with ``recipe`` as its ``recipe.yaml``."""
    model = load_base(base, classifier=classifier, quantized=quantized)
    lora.setdefault("target_modules", LINEARS)
    config = LoraConfig(r=lora.pop("r", 4), lora_alpha=lora.pop("lora_alpha", 8), lora_dropout=0.1,
                        task_type="SEQ_CLS" if classifier else "CAUSAL_LM", **lora)
    peft_model = get_peft_model(model, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(out)
    if recipe is not None:
        (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return out


def adapter_logits(base: Path, adapter: Path, *, classifier: bool = False, quantized: bool = False,
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(adapter model logits, base logits) on :data:`IDS` from PEFT, in eval mode."""
    model = peft_eval_model(base, adapter, classifier=classifier, quantized=quantized, dtype=dtype)
    with torch.no_grad():
        with_adapter = model(input_ids=IDS).logits.float()
        with model.disable_adapter():
            without = model(input_ids=IDS).logits.float()
    return with_adapter, without


def merged_logits(folder: Path, *, classifier: bool = False) -> torch.Tensor:
    """Logits on :data:`IDS` of a merged folder loaded with plain transformers in float32."""
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = loader.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=IDS).logits.float()


def plain_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a merged folder loaded with plain transformers in float32."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def bf16_step(reference: torch.Tensor) -> torch.Tensor:
    """One bfloat16 step (ulp) at each value of ``reference``: 2^(exponent - 7), subnormals floored."""
    mag = reference.float().abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
    return torch.exp2(torch.floor(torch.log2(mag)) - 7)
