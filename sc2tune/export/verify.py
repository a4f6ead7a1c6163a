"""``--verify``: the exported GGUF run in llama.cpp against the training-side model in transformers (float32).

For each held-out prompt (:mod:`sc2tune.export.prompts`, the same token ids to both engines):

* **greedy**: 64 new tokens, each the argmax of the last logits (no sampling, no stop token), in transformers
  and in llama.cpp; the prompt agrees when the two sequences are identical. A divergence at step ``j`` is a
  *near tie* when the reference's two best logits at that step differ by less than :data:`NEAR_TIE` (2e-3):
  there any rounding picks either token, so it is counted apart (``near_tie_divergences``);
* **next token**: both engines read the prompt followed by the reference's greedy tokens (teacher forcing);
  at every position the argmax agrees or not (``top1_agreement`` over all positions; a disagreement where the
  reference's top-2 gap is below :data:`NEAR_TIE` is a near tie, counted apart), and the logits differ by
  ``max|l_gguf - l_ref|`` and ``mean|l_gguf - l_ref|`` over positions and vocabulary;
* **tokenizer**: llama.cpp's tokenisation of each prompt's text equals transformers' (``tokenizer_agreement``).

``greedy_exact_match`` and ``top1_agreement`` are fractions of all prompts / positions; the ``*_excluding_near_ties``
figures leave the near-tie cases out of both numerator and denominator. The reference is the model training
produced: base + adapter through PEFT for an adapter run, the full fine-tune, or the model folder itself. A
GGUF-LoRA is verified as llama.cpp runs it: its base exported as an F32 GGUF with the adapter loaded by
``--lora`` (``lora_path``).

Two references, two blocks of the same figures. The top-level figures compare the file with **the trained
model** (what the user gets: the rounding to the chosen ``--dtype`` and llama.cpp together). For a file whose
weights are rounded (any tensor not F32: f16, bf16, q8_0, llama.cpp's quantised types), ``engine`` compares it
with **the file's own weights in transformers**: the reference model, once compared, has every parameter
replaced by the file's tensor read back with ``gguf.GGUFReader`` and dequantised by ``gguf.quants`` to float32
(:mod:`sc2tune.export.file_weights`: F16/BF16 exactly ``w.to(dtype).float()``, Q8_0 ``d * q`` per block, norms
and biases the F32 the file keeps), so the only difference left is llama.cpp's arithmetic. The replacement is
in place, one tensor at a time: verification holds one float32 model (plus one tensor), never two. An all-F32
file has no engine block (its weights are the trained ones), nor has a ``--lora`` check (``engine_note`` says
why).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sc2tune.errors import UserError

#: A reference top-2 logit gap below this is a near tie (the issue's threshold).
NEAR_TIE = 2e-3
#: Greedy tokens generated per prompt.
NEW_TOKENS = 64


@dataclass(frozen=True)
class Agreement:
    """llama.cpp against one transformers reference over the prompts (see the module docstring)."""

    prompts: int
    greedy_exact_match: float
    top1_agreement: float
    greedy_exact_match_excluding_near_ties: float
    top1_agreement_excluding_near_ties: float
    near_tie_divergences: int  #: prompts whose greedy sequences part at a reference near tie
    other_divergences: int  #: prompts whose greedy sequences part elsewhere
    top1_positions: int
    top1_near_tie_disagreements: int
    max_logit_diff: float
    mean_logit_diff: float

    def lines(self, new_tokens: int, indent: str = "  ") -> list[str]:
        """The figures as text lines."""
        return [f"{indent}greedy {new_tokens}-token exact match {self.greedy_exact_match:.3f} "
                f"({self.near_tie_divergences} near-tie, {self.other_divergences} other divergences; "
                f"{self.greedy_exact_match_excluding_near_ties:.3f} without near ties)",
                f"{indent}next-token top-1 agreement {self.top1_agreement:.4f} over {self.top1_positions} positions "
                f"({self.top1_near_tie_disagreements} near-tie disagreements; "
                f"{self.top1_agreement_excluding_near_ties:.4f} without)",
                f"{indent}logit difference max {self.max_logit_diff:.3g}, mean {self.mean_logit_diff:.3g}"]


@dataclass(frozen=True)
class VerifyReport(Agreement):
    """The agreement of a GGUF file in llama.cpp with the training-side model (the inherited top-level figures:
    what the user gets) and, for a file with rounded weights, with those very weights (``engine``)."""

    tokenizer_agreement: float
    new_tokens: int
    kinds: dict[str, int]  #: prompts per kind (fim, l2r, instruct)
    file: str
    lora: str | None
    reference: str
    weight_types: dict[str, int] = field(default_factory=dict)  #: the file's tensors per GGUF type
    engine: Agreement | None = None  #: against the file's own weights in transformers float32 (llama.cpp alone)
    engine_note: str | None = None  #: why there is no engine block

    def summary(self) -> str:
        """The figures in a few lines (``sc2tune export --verify``)."""
        types = ", ".join(f"{count} {name}" for name, count in self.weight_types.items())
        lines = [f"verified {self.file}{' + --lora ' + self.lora if self.lora else ''} in llama.cpp on "
                 f"{self.prompts} prompts ({', '.join(f'{v} {k}' for k, v in self.kinds.items())}); tokenizer "
                 f"agreement {self.tokenizer_agreement:.3f}{'; tensors ' + types if types else ''}",
                 f"  against the trained model, {self.reference}:", *self.lines(self.new_tokens, "    ")]
        if self.engine is not None:
            lines += ["  against the file's own weights in transformers (float32; llama.cpp alone):",
                      *self.engine.lines(self.new_tokens, "    ")]
        elif self.engine_note:
            lines.append(f"  against the file's own weights: {self.engine_note}")
        return "\n".join(lines)


def _gap(logits: Any) -> float:
    """Top-2 gap of a logit row."""
    import numpy as np

    top = np.partition(logits, -2)[-2:]
    return float(top[1] - top[0])


def _reference_greedy(model: Any, ids: list[int], steps: int) -> list[int]:
    """``steps`` argmax tokens of the transformers model (with its KV cache)."""
    import torch

    out: list[int] = []
    with torch.no_grad():
        result = model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
        for _ in range(steps):
            token = int(result.logits[0, -1].argmax())
            out.append(token)
            if len(out) < steps:
                result = model(torch.tensor([[token]]), cache=result.cache, use_cache=True, logits_to_keep=1)
    return out


def _llama_greedy(llm: Any, ids: list[int], steps: int) -> list[int]:
    """``steps`` argmax tokens of llama.cpp, from its raw logits."""
    import numpy as np

    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        llm.eval([token])
    return out


def _llama_logits(llm: Any, ids: list[int]) -> Any:
    import numpy as np

    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def agreement(llm: Any, model: Any, prompts: list[Any], new_tokens: int = NEW_TOKENS) -> Agreement:
    """Run every prompt through llama.cpp and the transformers ``model`` and collect the figures (see the module
    docstring; near ties are the ``model``'s)."""
    import numpy as np
    import torch

    exact = near = other = positions = agree = near_pos = 0
    max_diff, diff_sum, diff_count = 0.0, 0.0, 0
    for prompt in prompts:
        ref_tokens = _reference_greedy(model, prompt.ids, new_tokens)
        full = prompt.ids + ref_tokens
        with torch.no_grad():
            ref = model(torch.tensor([full])).logits[0].float().numpy()
        got = _llama_logits(llm, full)
        ours = _llama_greedy(llm, prompt.ids, new_tokens)
        n = len(prompt.ids)
        if ours == ref_tokens:
            exact += 1
        else:
            j = next(i for i, (a, b) in enumerate(zip(ours, ref_tokens, strict=True)) if a != b)
            if _gap(ref[n - 1 + j]) < NEAR_TIE:
                near += 1
            else:
                other += 1
        diff = np.abs(got - ref)
        max_diff = max(max_diff, float(diff.max()))
        diff_sum += float(diff.sum())
        diff_count += diff.size
        same = got.argmax(-1) == ref.argmax(-1)
        ties = np.array([_gap(row) < NEAR_TIE for row in ref])
        positions += len(full)
        agree += int(same.sum())
        near_pos += int((~same & ties).sum())
    count = len(prompts)
    return Agreement(
        prompts=count, greedy_exact_match=exact / count, top1_agreement=agree / positions,
        greedy_exact_match_excluding_near_ties=exact / max(count - near, 1),
        top1_agreement_excluding_near_ties=agree / max(positions - near_pos, 1),  # every agreement is kept
        near_tie_divergences=near, other_divergences=other, top1_positions=positions,
        top1_near_tie_disagreements=near_pos, max_logit_diff=max_diff, mean_logit_diff=diff_sum / diff_count)


def tokenizer_agreement(llm: Any, tokenizer: Any, prompts: list[Any]) -> float:
    """The share of prompts whose text llama.cpp tokenises as transformers does."""
    same = sum(llm.tokenize(p.text.encode("utf-8"), add_bos=False, special=True)
               == tokenizer(p.text, add_special_tokens=False)["input_ids"] for p in prompts)
    return same / len(prompts)


@contextlib.contextmanager
def open_llama(file: Path, *, n_ctx: int, lora: Path | None = None) -> Any:
    """llama.cpp on ``file`` (CPU, one thread, logits of every position), closed afterwards."""
    from sc2tune.export.quantize import llama_cpp_module

    llama_cpp: Any = llama_cpp_module()
    try:
        llm = llama_cpp.Llama(str(file), n_ctx=n_ctx, n_batch=n_ctx, n_threads=1, n_gpu_layers=0,
                              logits_all=True, verbose=False, lora_path=str(lora) if lora else None)
    except ValueError as err:
        raise UserError(f"llama.cpp cannot load {file}{' with --lora ' + str(lora) if lora else ''} ({err})",
                        hint="run with -v to see llama.cpp's log") from None
    try:
        yield llm
    finally:
        llm.close()


def _reference(path: str | Path, trust_remote_code: bool) -> tuple[Any, Any, Any, str]:
    """(model, tokenizer, recipe, description) of the training-side model, float32 on the CPU."""
    from sc2tune.runs import load_trained, read_trained

    folder = read_trained(path, trust_remote_code=trust_remote_code)
    which = "adapter" if folder.adapter_dir is not None or folder.full_dir is not None else "merged"
    loaded = load_trained(folder, which, dtype="float32", device="cpu")  # type: ignore[arg-type]
    what = "base + adapter (PEFT)" if folder.adapter_dir is not None else "the model"
    return loaded.model, loaded.tokenizer, folder.recipe, f"transformers float32 ({what})"


def _engine(llm: Any, model: Any, file: Path, prompts: list[Any], new_tokens: int
            ) -> tuple[dict[str, int], Agreement | None, str | None]:
    """(the file's tensor types, llama.cpp against the file's own weights in ``model``, or why not).

    ``model`` (the reference, already compared) has its weights replaced in place by the file's dequantised
    values (:func:`sc2tune.export.file_weights.load_file_weights`): no second copy of the model is loaded."""
    from sc2tune.export.file_weights import GgufWeights, load_file_weights

    weights = GgufWeights(file)
    types = weights.types()
    if set(types) <= {"F32"}:  # no tensor rounded: its values are the float32 weights
        return types, None, "every tensor is F32: the trained model's weights, the block above"
    import torch

    odd = {str(p.dtype) for p in model.parameters()} - {str(torch.float32)}
    if odd:  # e.g. a QLoRA reference on its 4-bit base: no float32 weights to replace
        return types, None, f"not computed (the reference model holds {', '.join(sorted(odd))} weights)"
    try:
        rounded = load_file_weights(model, weights)
    except NotImplementedError as err:  # a type gguf's dequantisers do not read
        return types, None, f"not computed ({err})"
    return types, agreement(llm, rounded, prompts, new_tokens), None


def _run(path: str | Path, file: Path, lora: Path | None, prompts: int, new_tokens: int,
         trust_remote_code: bool) -> VerifyReport:
    from sc2tune.export.prompts import verify_prompts

    model, tokenizer, recipe, what = _reference(path, trust_remote_code)
    chosen = verify_prompts(tokenizer, prompts, recipe)
    n_ctx = max(len(p.ids) for p in chosen) + new_tokens + 8
    with open_llama(file, n_ctx=n_ctx, lora=lora) as llm:
        trained = agreement(llm, model, chosen, new_tokens)
        tokens = tokenizer_agreement(llm, tokenizer, chosen)
        types: dict[str, int] = {}
        engine, note = None, "not computed for --lora (the adapter is applied by llama.cpp at run time)"
        if lora is None:
            types, engine, note = _engine(llm, model, file, chosen, new_tokens)
    kinds = dict(Counter(prompt.kind for prompt in chosen))
    return VerifyReport(**asdict(trained), tokenizer_agreement=tokens, new_tokens=new_tokens, kinds=kinds,
                        file=str(file), lora=str(lora) if lora else None, reference=what, weight_types=types,
                        engine=engine, engine_note=note)


def verify_gguf(path: str | Path, file: str | Path, *, prompts: int = 8, new_tokens: int = NEW_TOKENS,
                trust_remote_code: bool = False) -> VerifyReport:
    """Compare the GGUF ``file`` exported from ``path`` with ``path``'s model (see the module docstring)."""
    return _run(path, Path(file), None, prompts, new_tokens, trust_remote_code)


def verify_lora(path: str | Path, lora_file: str | Path, *, prompts: int = 8, new_tokens: int = NEW_TOKENS,
                base_gguf: str | Path | None = None, trust_remote_code: bool = False) -> VerifyReport:
    """Compare llama.cpp's base GGUF + ``--lora lora_file`` with base + adapter in transformers; the base GGUF
    is exported as F32 into a temporary folder unless ``base_gguf`` is given."""
    if base_gguf is not None:
        return _run(path, Path(base_gguf), Path(lora_file), prompts, new_tokens, trust_remote_code)
    from sc2tune.export.model_file import write_gguf
    from sc2tune.export.weights import open_weights
    from sc2tune.runs import read_trained

    folder = read_trained(path, trust_remote_code=trust_remote_code)
    with tempfile.TemporaryDirectory(prefix="sc2tune-verify-") as tmp:
        base = Path(tmp) / "base-f32.gguf"  # a temporary file: written directly, not staged
        write_gguf(open_weights(folder.base_dir(), trust_remote_code=trust_remote_code), base, "f32")
        return _run(path, base, Path(lora_file), prompts, new_tokens, trust_remote_code)
