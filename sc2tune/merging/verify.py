"""Check a merged folder against the adapter it came from, on a few prompts, in eval mode.

Two models run one after the other (so memory holds one model at a time, about the base model's
size in the chosen dtype):

1. the adapter model: the base loaded as in training (4-bit NF4 for a QLoRA adapter merged into its
   round trip, computing with the dequantised weights as training does) with the PEFT adapter on top; its logits, and for a causal LM also the base's logits
   (the same model with the adapter disabled);
2. the merged folder loaded with plain transformers.

Pass when ``max |logits_merged - logits_adapter| <= tol(dtype) * max(1, max |logits_adapter|)`` and, for a
causal LM, the merged logits are closer to the adapter's than the base's are (the adapter is really in).
``tol`` is 1e-4 for float32 and covers the output rounding for 16-bit dtypes (bfloat16 has 8 bits of
mantissa: relative rounding 2^-9, accumulated through the layers).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from sc2tune.merging.adapter import QuantSettings

log = logging.getLogger(__name__)

PROMPTS: tuple[str, ...] = (
    'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n',
    "import numpy as np\n\n\nclass Matrix:\n    def __init__(self, rows):\n",
    "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return total\n<fim_middle>",
)

TOLERANCE: dict[torch.dtype, float] = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


@dataclass(frozen=True)
class Verification:
    """Figures comparing the merged model with the adapter model."""

    max_abs_diff: float  # max |merged - adapter| over all prompts, positions and vocabulary entries
    tolerance: float  # the bound max_abs_diff had to stay under
    top1_agreement: float  # share of positions where both models pick the same top token / class
    adapter_effect: float | None  # max |adapter - base| (causal LM), how much the adapter changes the logits
    positions: int
    passed: bool

    def summary(self) -> str:
        effect = "" if self.adapter_effect is None else f", adapter effect {self.adapter_effect:.3g}"
        return (f"max |logit diff| {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}), top-1 agreement "
                f"{self.top1_agreement:.1%} over {self.positions} positions{effect}")


def _logits(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(**b).logits.float() for b in batches]


def _load(path: Path, *, classifier: bool, dtype: torch.dtype, labels: dict[int, str] | None,
          pad_token_id: int | None, quant: QuantSettings | None) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    kwargs: dict = {"dtype": dtype}
    if classifier and labels is not None:
        kwargs.update(num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()},
                      pad_token_id=pad_token_id)
    if quant is not None:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=quant.quant_type,
            bnb_4bit_use_double_quant=quant.double_quant, bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=["score"] if classifier else None,
        )
        kwargs["device_map"] = {"": "cpu"}
    loader = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    model = loader.from_pretrained(str(path), **kwargs).eval()
    if quant is not None:
        exact_4bit_matmul(model)
    return model


def exact_4bit_matmul(model: torch.nn.Module) -> None:
    """Make bitsandbytes 4-bit layers compute ``x @ dequant(W)^T`` in the compute dtype, as in training.

    On CPUs with AVX512-BF16, bitsandbytes switches eval-mode 4-bit layers to a fused kernel that
    rounds inputs and scales to bfloat16; that is an inference shortcut, not what the adapter was
    trained against, so the check turns it off (the layer's ``support_avx512bf16_for_cpu`` flag).
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _prompt_batches(merged_dir: Path, prompts: tuple[str, ...], vocab_size: int) -> list[dict[str, torch.Tensor]]:
    """Tokenised prompts: the merged folder's tokenizer, else the bundled StarCoder2 one (same vocabulary),
    else fixed pseudo-random token ids (a model with another vocabulary and no tokenizer)."""
    from transformers import AutoTokenizer

    from sc2tune.merging.output import has_tokenizer
    from sc2tune.tiny import load_bundled_tokenizer

    if has_tokenizer(merged_dir):
        tokenizer = AutoTokenizer.from_pretrained(str(merged_dir))
    elif vocab_size >= 49152:
        tokenizer = load_bundled_tokenizer()
    else:
        gen = torch.Generator().manual_seed(0)
        return [{"input_ids": torch.randint(0, vocab_size, (1, 24), generator=gen)} for _ in prompts]
    return [dict(tokenizer(p, return_tensors="pt")) for p in prompts]


def verify_merge(merged_dir: Path, base_dir: Path, adapter_dir: Path, *, classifier: bool, dtype: torch.dtype,
                 quant: QuantSettings | None, prompts: tuple[str, ...] = PROMPTS) -> Verification:
    """Run the adapter model and the merged model on ``prompts`` and compare their logits."""
    with quiet_transformers():
        return _verify(merged_dir, base_dir, adapter_dir, classifier=classifier, dtype=dtype, quant=quant,
                       prompts=prompts)


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


def _verify(merged_dir: Path, base_dir: Path, adapter_dir: Path, *, classifier: bool, dtype: torch.dtype,
            quant: QuantSettings | None, prompts: tuple[str, ...]) -> Verification:
    from peft import PeftModel
    from transformers import AutoConfig

    merged_config = AutoConfig.from_pretrained(str(merged_dir))
    batches = _prompt_batches(merged_dir, prompts, merged_config.vocab_size)
    labels = {int(k): v for k, v in merged_config.id2label.items()} if classifier else None
    load_dtype = getattr(torch, quant.dtype) if quant is not None and quant.dtype else dtype

    base = _load(base_dir, classifier=classifier, dtype=load_dtype, labels=labels,
                 pad_token_id=merged_config.pad_token_id, quant=quant)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    expected = _logits(model, batches)
    base_logits = None
    if not classifier:
        with model.disable_adapter():
            base_logits = _logits(model, batches)
    del model, base
    gc.collect()

    merged = _load(merged_dir, classifier=classifier, dtype=dtype, labels=None, pad_token_id=None, quant=None)
    got = _logits(merged, batches)
    del merged
    gc.collect()

    diff = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True))
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    tol = TOLERANCE.get(dtype, 1e-2) * scale
    agree = [(g.argmax(-1) == e.argmax(-1)).float() for g, e in zip(got, expected, strict=True)]
    positions = sum(a.numel() for a in agree)
    top1 = float(sum(a.sum() for a in agree)) / positions
    effect = None
    passed = diff <= tol
    if base_logits is not None:
        effect = max(float((e - b).abs().max()) for e, b in zip(expected, base_logits, strict=True))
        base_gap = max(float((g - b).abs().max()) for g, b in zip(got, base_logits, strict=True))
        # the adapter must show: merged nearer the adapter than the base is, unless the adapter's own effect
        # is inside the tolerance (then only the tensor-level "changed" count can tell)
        passed = passed and (base_gap > diff or effect <= tol)
    return Verification(diff, tol, top1, effect, positions, passed)
