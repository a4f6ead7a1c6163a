"""Shared builders for the merge tests: synthetic sharded StarCoder2 bases and PEFT-made adapters.

References stay independent of the merge code: adapters come from PEFT (``get_peft_model``, factors
randomised so the update is not zero), expected weights from PEFT's ``merge_and_unload`` and expected
logits from ``PeftModel`` in eval mode.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, Starcoder2ForCausalLM

from sc2tune.tiny import tiny_config

LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]


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


def bnb4() -> BitsAndBytesConfig:
    """The QLoRA base: NF4, double quant, float32 compute."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.float32)


def peft_adapter(base: Path, out: Path, *, seed: int = 0, std: float = 0.2, quantized: bool = False,
                 **lora: object) -> Path:
    """Save a PEFT LoRA adapter (LoraConfig ``lora``) for ``base`` with random non-zero factors.

    DoRA magnitudes are moved off their initial value (the base norm) by a random factor around 1.
    """
    kwargs: dict = {"dtype": torch.float32}
    if quantized:
        kwargs.update(quantization_config=bnb4(), device_map={"": "cpu"})
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
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
    kwargs: dict = {"dtype": torch.float32}
    if quantized:
        kwargs.update(quantization_config=bnb4(), device_map={"": "cpu"})
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, **kwargs), adapter).eval()
    for module in model.modules():  # bitsandbytes' bf16 CPU inference kernel is not what training computes
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def plain_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    """Logits of a merged folder loaded with plain transformers in float32."""
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def bf16_step(reference: torch.Tensor) -> torch.Tensor:
    """One bfloat16 step (ulp) at each value of ``reference``: 2^(exponent - 7), subnormals floored."""
    mag = reference.float().abs().clamp_min(torch.finfo(torch.bfloat16).tiny)
    return torch.exp2(torch.floor(torch.log2(mag)) - 7)
