"""Check a merged folder against the adapter it came from, on a few prompts, in eval mode.

Models run one after the other (memory holds one model at a time, about the base model's size in the chosen
dtype, plus one adapted module in float32):

1. the adapter model: the base the merge used, loaded in the checkpoint's own dtype (4-bit NF4 for a QLoRA adapter merged into its round trip,
   computing with the dequantised weights as training does) with the PEFT adapter on top: logits ``A``, and
   for a causal LM the base's logits ``B`` (the same model with the adapter disabled);
2. the reference: that same model turned by PEFT into a merged one, module by module: each adapted module is
   cast to float32, merged by PEFT's own ``merge`` (LoRA, rsLoRA, DoRA; a 4-bit base is dequantised first),
   and rounded once to the output dtype: logits ``R``. It rounds exactly as the merge under test must;
3. the merged folder loaded with plain transformers: logits ``M``.

The decision rests on the weights, where rounding is exactly known: every tensor of the merged folder must
equal the reference's within one step (unit in the last place) of the output dtype,

    |w_merged - w_ref| <= ulp_dtype(w_ref) + 1e-6 * max |w_ref of that tensor|

(the second term absorbs float32 sums taken in another order). An exact merge writes the reference's
weights up to such last-bit ties, so it always passes, however much rounding to bf16 moves the logits; a
wrong merge (wrong scale, a missed module, a wrong DoRA norm) moves whole rows by many steps and fails. The
tensors are read one at a time from the merged folder, so memory still holds one model.

The logits then check that the folder loads and computes like the reference in plain transformers:
``max |M - R| <= tol`` with ``tol = max(1e-4 * max(1, max |A|), max |R - A|)``: the merged model may not be
further from PEFT's rounded merge than rounding itself moves the logits (a 16-bit forward pass rounds every
activation, so one flipped last bit can move a logit by a step of the output dtype). For a causal LM the
merged logits must also be nearer ``A`` than ``B`` is (the adapter is really in). ``max |M - A|``, the
rounding's own effect ``max |R - A|`` and the top-1 agreement with ``A`` are reported as they are.

A QLoRA adapter merged into the *original* weights (``merge_into="original"``) is checked against the
original base plus adapter (what that merge computes), and compared with the model as trained (4-bit base
plus adapter, logits ``T``): ``max |M - T|`` and the top-1 agreement are what merging into the original
weights costs, reported, not hidden.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path

import torch

from sc2tune.merging.plan import MergePlan
from sc2tune.modeling import ModelSource, load_model, load_tokenizer, with_adapter
from sc2tune.recipe import QuantSpec
from sc2tune.runs import has_tokenizer, quiet_transformers

PROMPTS: tuple[str, ...] = (
    'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n',
    "import numpy as np\n\n\nclass Matrix:\n    def __init__(self, rows):\n",
    "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return total\n<fim_middle>",
)

FLOOR = 1e-4  # relative bound on |M - R| for float32 sums that differ only in order
SUM_NOISE = 1e-6  # per tensor, relative to its largest value: float32 sums taken in another order
MANTISSA_BITS: dict[torch.dtype, int] = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}


@dataclass(frozen=True)
class Verification:
    """Figures comparing the merged model with the adapter model and with the same-rounding reference."""

    max_abs_diff: float  # max |merged - adapter model| over all prompts, positions and vocabulary entries
    tolerance: float  # the bound reference_diff had to stay under
    top1_agreement: float  # share of positions where merged and adapter model pick the same top token / class
    adapter_effect: float | None  # max |adapter - base| (causal LM), how much the adapter changes the logits
    positions: int
    passed: bool
    reference_diff: float = 0.0  # max |merged - PEFT's float32 merge rounded once to the output dtype|
    rounding_effect: float = 0.0  # max |that reference - adapter model|: what the output dtype changes
    trained_diff: float | None = None  # QLoRA merged into the original weights: max |merged - as trained|
    trained_top1: float | None = None  # ... and the top-1 agreement with the model as trained
    tensors_checked: int = 0  # merged tensors compared with PEFT's rounded merge
    tensors_off: list[str] = field(default_factory=list)  # those off by more than one step (or missing)
    logit_scale: float = 1.0  # max(1, max |adapter model logits|)

    def summary(self) -> str:
        effect = "" if self.adapter_effect is None else f", adapter effect {self.adapter_effect:.3g}"
        text = (f"max |logit diff| {self.max_abs_diff:.3g} vs the adapter model (output rounding alone: "
                f"{self.rounding_effect:.3g}), vs PEFT's merge rounded the same way {self.reference_diff:.3g} "
                f"(tolerance {self.tolerance:.3g}), top-1 agreement {self.top1_agreement:.1%} over "
                f"{self.positions} positions{effect}")
        text += f"; {self.tensors_checked - len(self.tensors_off)} of {self.tensors_checked} tensors within one " \
                "step of PEFT's float32 merge rounded once"
        if self.tensors_off:
            text += f" (off: {', '.join(self.tensors_off[:3])}{' ...' if len(self.tensors_off) > 3 else ''})"
        if self.trained_diff is not None and self.trained_top1 is not None:
            text += (f"; vs the model as trained (4-bit base + adapter): max |logit diff| {self.trained_diff:.3g}, "
                     f"top-1 agreement {self.trained_top1:.1%}: what merging into the original weights costs")
        return text


def _logits(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [model(**b).logits.float() for b in batches]


def _prompt_batches(merged: ModelSource, prompts: tuple[str, ...], vocab_size: int) -> list[dict[str, torch.Tensor]]:
    """Tokenised prompts: the merged folder's tokenizer, else the bundled StarCoder2 one (same vocabulary),
    else fixed pseudo-random token ids (a model with another vocabulary and no tokenizer)."""
    from sc2tune.tiny import load_bundled_tokenizer

    if has_tokenizer(Path(merged.name_or_path)):
        tokenizer = load_tokenizer(merged, pad=False)
    elif vocab_size >= 49152:
        tokenizer = load_bundled_tokenizer()
    else:
        gen = torch.Generator().manual_seed(0)
        return [{"input_ids": torch.randint(0, vocab_size, (1, 24), generator=gen)} for _ in prompts]
    return [dict(tokenizer(p, return_tensors="pt")) for p in prompts]


def rounded_reference(model: torch.nn.Module, adapter_dir: Path, dtype: torch.dtype,
                      *, quantized: bool) -> torch.nn.Module:
    """PEFT's own merge of ``model`` (a ``PeftModel``) in float32, one module at a time, rounded once to ``dtype``.

    A 4-bit base is dequantised first (transformers' ``dequantize``: the NF4 round trip training computed
    with) and the adapter attached again, so PEFT merges into plain weights instead of re-quantising.
    """
    from peft.tuners.lora import LoraLayer

    if quantized:
        base = model.unload()
        base.dequantize()
        model = with_adapter(base, adapter_dir)
    _untie_adapted_embeddings(model)
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.to(torch.float32)
            module.merge()
            _round_parameters(module, dtype)
    merged = model.unload()
    _round_parameters(merged, dtype)
    return merged.eval()


def _untie_adapted_embeddings(model: torch.nn.Module) -> None:
    """Give a tied output embedding its own weight when the adapter wraps either embedding.

    The adapter model computes the input and output embeddings through their own wrappers, i.e. with two
    different matrices; PEFT's merge into the one shared tensor would add both updates to both (tied
    StarCoder2 3B/7B), which is not the model the adapter computes. Untied first, each update goes where the
    adapter applies it; the merged folder stays tied only where both come out equal.
    """
    base = model.get_base_model()
    inp, out = base.get_input_embeddings(), base.get_output_embeddings()
    if out is None:
        return
    in_layer = inp.get_base_layer() if hasattr(inp, "get_base_layer") else inp
    out_layer = out.get_base_layer() if hasattr(out, "get_base_layer") else out
    wrapped = in_layer is not inp or out_layer is not out
    if wrapped and out_layer.weight is in_layer.weight:
        out_layer.weight = torch.nn.Parameter(out_layer.weight.detach().clone(), requires_grad=False)


def _round_parameters(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters to ``dtype`` in place; buffers (rotary ``inv_freq``) keep their float32, as
    ``from_pretrained(dtype=...)`` keeps them."""
    for param in module.parameters():
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)


def compare_weights(reference: torch.nn.Module, merged_dir: Path, dtype: torch.dtype) -> tuple[int, list[str]]:
    """Compare every weight of ``reference`` with the merged folder's, one tensor at a time.

    Returns (tensors compared, names off by more than one ``dtype`` step or missing). An output embedding
    the folder does not store (tied) is compared with the input embedding it is tied to.
    """
    from safetensors import safe_open

    from sc2tune.merging.checkpoint import checkpoint_tensors

    where = {name: info.file for name, info in checkpoint_tensors(merged_dir).items()}
    state = reference.state_dict()
    tied = {}  # a folder with tied embeddings stores the output embedding once, as the input embedding
    out_emb, in_emb = reference.get_output_embeddings(), reference.get_input_embeddings()
    if out_emb is not None:
        names = {id(m): n for n, m in reference.named_modules()}
        tied[f"{names[id(out_emb)]}.weight"] = f"{names[id(in_emb)]}.weight"
    bits = MANTISSA_BITS.get(dtype, 7)
    off: list[str] = []
    checked = 0
    for name, ref in state.items():
        key = name if name in where else tied.get(name)
        if key is None or key not in where:
            off.append(f"{name} (missing)")
            continue
        with safe_open(str(where[key]), framework="pt") as handle:
            got = handle.get_tensor(key)
        checked += 1
        if got.shape != ref.shape:
            off.append(f"{name} (shape)")
            continue
        if not ref.is_floating_point():
            if not torch.equal(got, ref):
                off.append(name)
            continue
        r = ref.float()
        step = torch.exp2(torch.floor(torch.log2(r.abs().clamp_min(torch.finfo(dtype).tiny))) - bits)
        allowed = step + SUM_NOISE * float(r.abs().max()) if r.numel() else step
        if not bool(((got.float() - r).abs() <= allowed).all()):
            off.append(name)
    return checked, off


def _top1(got: list[torch.Tensor], ref: list[torch.Tensor]) -> tuple[float, int]:
    agree = [(g.argmax(-1) == e.argmax(-1)).float() for g, e in zip(got, ref, strict=True)]
    positions = sum(a.numel() for a in agree)
    return float(sum(a.sum() for a in agree)) / positions, positions


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@quiet_transformers()
def verify_merge(merged_dir: Path, plan: MergePlan, base: ModelSource, adapter_dir: Path, *, dtype: torch.dtype,
                 trained_quant: QuantSpec | None, base_dtype: torch.dtype) -> Verification:
    """Run the adapter model, PEFT's rounded merge and the merged model on :data:`PROMPTS`; compare their logits.

    ``plan``: the merge's (its output config, head, and ``quant``: the 4-bit round trip the merge used, None for
    the base weights as stored). ``base``: the base the merge read (its folder, head, and whether its own
    code may run: the merged folder is loaded the same way). ``trained_quant``: the QLoRA settings the
    adapter was trained with; when it is set and ``plan.quant`` is not (merged into the original weights), the
    merged model is also compared with the model as trained. ``base_dtype``: the checkpoint's dtype, the
    precision the adapter model and PEFT's merge start from.
    """
    config, classifier, quant = plan.config, plan.classifier, plan.quant  # the merged folder's config.json
    merged = base.replace(name_or_path=str(merged_dir), dtype=_dtype_name(dtype), attn=None)
    batches = _prompt_batches(merged, PROMPTS, config.vocab_size)
    labels = {int(k): v for k, v in config.id2label.items()} if classifier else None

    def adapter_model(q: QuantSpec | None) -> torch.nn.Module:
        load_dtype = plan.quant_dtype if q is not None and plan.quant_dtype else _dtype_name(base_dtype)
        source = base.replace(dtype=load_dtype, quant=q, labels=labels, attn=None, adapter=adapter_dir)
        return load_model(source, device="cpu", pad_token_id=config.pad_token_id if classifier else None)

    trained = None
    if trained_quant is not None and quant is None:  # merged into the original weights: vs as trained
        model = adapter_model(trained_quant)
        trained = _logits(model, batches)
        del model
        gc.collect()

    model = adapter_model(quant)
    expected = _logits(model, batches)
    base_logits = None
    if not classifier:
        with model.disable_adapter():
            base_logits = _logits(model, batches)
    reference_model = rounded_reference(model, adapter_dir, dtype, quantized=quant is not None)
    del model
    reference = _logits(reference_model, batches)
    checked, off = compare_weights(reference_model, merged_dir, dtype)
    del reference_model
    gc.collect()

    merged_model = load_model(merged, device="cpu")
    got = _logits(merged_model, batches)
    del merged_model
    gc.collect()

    diff = _max_diff(got, expected)
    reference_diff = _max_diff(got, reference)
    rounding = _max_diff(reference, expected)
    scale = max(1.0, max(float(e.abs().max()) for e in expected))
    tol = max(FLOOR * scale, rounding)
    top1, positions = _top1(got, expected)
    passed = not off and reference_diff <= tol
    effect = None
    if base_logits is not None:
        effect = _max_diff(expected, base_logits)
        base_gap = _max_diff(got, base_logits)
        # the adapter must show: merged nearer the adapter than the base is, unless the adapter's own effect
        # is inside the tolerance (then only the tensor-level "changed" count can tell)
        passed = passed and (base_gap > diff or effect <= tol)
    trained_diff = trained_top1 = None
    if trained is not None:
        trained_diff = _max_diff(got, trained)
        trained_top1, _ = _top1(got, trained)
    return Verification(diff, tol, top1, effect, positions, passed, reference_diff, rounding, trained_diff,
                        trained_top1, checked, off, scale)
