"""Training time from FLOPs: how many hours an epoch takes on N GPUs of a given kind.

Counting (per trained token, ``N`` = weights that take part in a matrix multiply: every linear layer of the
decoder plus the output layer, ``vocab x hidden``; embeddings are lookups and cost nothing)::

    forward                  F = 2 N + A          A = 2 n_layers L d_q    (attention scores and their use)
    full fine-tuning         6 N + 3 A            forward + backward (input gradients 2 N, weight gradients 2 N)
    LoRA / QLoRA             4 N + 3 A + 6 N_lora the frozen base skips its weight-gradient matmuls; the
                                                  adapters (N_lora = r (in + out) per target) are trained in full
    gradient checkpointing   + F                  every layer's forward runs again in the backward

``A``: a token at position ``p`` multiplies its query with ``p`` keys and its attention weights with ``p``
values, ``2 x 2 p d_q`` FLOPs per layer (``d_q`` = heads x head dim; multi-query attention shares keys and
values, not this work); averaged over a causal row of ``L`` positions ``p ~ L / 2``. Packed rows attend per
document, so ``A`` with ``L = max_length`` is an upper bound. The attention backward is twice its forward.
QLoRA counts the same FLOPs as LoRA: de-quantising the 4-bit weights is memory traffic, not matmul work, and
shows up as a lower achieved utilisation instead.

Time per epoch = ``tokens x FLOPs per token / (GPUs x peak dense bf16 FLOP/s x MFU)``. MFU (model FLOPs
utilisation: the share of the peak that training really achieves) is an assumption, :data:`DEFAULT_MFU`,
stated with every estimate and overridable; 0.35-0.45 is what a tuned bf16 fine-tuning stack reaches on an
A100 at a few thousand tokens per micro-batch, less with small micro-batches, QLoRA or slow interconnects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sc2tune.architectures import ModelLayout
from sc2tune.architectures.layout import distinct_numel
from sc2tune.errors import UserError
from sc2tune.planning.structure import decoder_layers

#: Assumed model FLOPs utilisation when none is given.
DEFAULT_MFU = 0.4


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: dense (no 2:4 sparsity) bf16 tensor-core peak with fp32 accumulation, and memory."""

    name: str
    bf16_tflops: float
    memory_gib: int
    source: str


#: Peak dense bf16 TFLOPS (NVIDIA quotes "with sparsity" figures at twice these) and memory (nominal GB,
#: taken as GiB like ``--gpu-memory``).
GPUS: dict[str, GpuSpec] = {g.name.lower(): g for g in (
    GpuSpec("A100-40GB", 312.0, 40, "NVIDIA A100 datasheet: BF16 tensor 312 TFLOPS dense (624 with sparsity)"),
    GpuSpec("A100-80GB", 312.0, 80, "NVIDIA A100 datasheet: BF16 tensor 312 TFLOPS dense (624 with sparsity)"),
    GpuSpec("H100-80GB", 989.0, 80, "NVIDIA H100 SXM datasheet: BF16 tensor 1979 TFLOPS with sparsity, "
            "989 dense (the PCIe card: 756 dense)"),
    GpuSpec("L4", 121.0, 24, "NVIDIA L4 datasheet: BF16 tensor 242 TFLOPS with sparsity, 121 dense"),
    GpuSpec("A10G", 70.0, 24, "AWS's variant of the A10 (no NVIDIA datasheet); 70 TFLOPS dense bf16 tensor is "
            "the commonly quoted figure (the A10: 125)"),
    GpuSpec("RTX-4090", 165.2, 24, "NVIDIA Ada Lovelace whitepaper: BF16 tensor with FP32 accumulate 165.2 "
            "TFLOPS dense (330.4 with sparsity)"),
)}


def _key(name: str) -> str:
    return re.sub(r"[\s_]", "-", name.strip().lower()).replace("rtx4090", "rtx-4090")


def parse_gpus(text: str) -> tuple[int, GpuSpec]:
    """``8xA100-80GB``, ``2 x L4``, ``H100-80GB`` (one) -> (count, spec); case and ``_``/space-insensitive."""
    match = re.fullmatch(r"\s*(?:(\d+)\s*[x*]\s*)?(.+?)\s*", text, flags=re.IGNORECASE)
    spec = GPUS.get(_key(match.group(2))) if match else None
    if match is None or spec is None:
        known = ", ".join(g.name for g in GPUS.values())
        raise UserError(f"--gpus '{text}' is not COUNTxGPU with a known GPU",
                        hint=f"write e.g. 8xA100-80GB or 1xL4; known GPUs: {known}")
    count = int(match.group(1) or 1)
    if count < 1:
        raise UserError(f"--gpus '{text}': the count must be at least 1", hint="e.g. 8xA100-80GB")
    return count, spec


@dataclass(frozen=True)
class FlopCount:
    """Training FLOPs per token and the parts they come from."""

    matmul_params: int  #: N: weights used in a matmul (linears + output layer)
    lora_params: int  #: N_lora
    attention_per_token: int  #: A, forward
    forward: int  #: F = 2 N + A (+ 2 N_lora)
    train: int  #: FLOPs per trained token, backward and recomputation included
    formula: str


def matmul_params(layout: ModelLayout) -> int:
    """N: the elements of every linear weight (``nn.Linear``, ``Conv1D``), the output layer's included once."""
    return distinct_numel((f"{m.name}.weight", p) for m in layout.modules
                          if m.linear or m.name == layout.output_head  # an output layer that is not a Linear too
                          for p in m.params if p.name == "weight")


def attention_flops(*, layers: int, length: int, q_width: int) -> int:
    """A = 2 n_layers L d_q: ``4 p d_q`` per layer at position p, averaged over p ~ L/2."""
    return 2 * layers * length * q_width


def training_flops(layout: ModelLayout, *, method: str, lora_params: int, length: int, q_width: int,
                   gradient_checkpointing: bool) -> FlopCount:
    """FLOPs per trained token for ``method`` (lora | qlora | full); see the module docstring."""
    n = matmul_params(layout)
    layers = decoder_layers(layout)[1]
    a = attention_flops(layers=layers, length=length, q_width=q_width)
    full = method == "full"
    n_lora = 0 if full else lora_params
    forward = 2 * n + a + 2 * n_lora
    if full:
        per_token, formula = 6 * n + 3 * a, "6N + 3A"
    else:
        per_token, formula = 4 * n + 3 * a + 6 * n_lora, "4N + 3A + 6N_lora"
    if gradient_checkpointing:
        per_token += forward
        formula += " + F (checkpointing)"
    return FlopCount(n, n_lora, a, forward, per_token, formula)


@dataclass(frozen=True)
class TimeEstimate:
    """Hours of training on ``gpus`` x ``gpu`` at utilisation ``mfu``."""

    gpu: str
    gpus: int
    peak_tflops: float
    mfu: float
    tokens_per_epoch: int
    tokens_source: str
    epochs: float
    flops: FlopCount
    hours_per_epoch: float
    hours_total: float

    def implied_mfu(self, hours: float) -> float:
        """The utilisation at which the whole run takes ``hours`` (to compare with a reported time)."""
        return self.mfu * self.hours_total / hours


def estimate_time(flops: FlopCount, *, tokens_per_epoch: int, epochs: float, gpus: int, gpu: GpuSpec,
                  mfu: float = DEFAULT_MFU, tokens_source: str = "") -> TimeEstimate:
    """``tokens x FLOPs/token / (gpus x peak x mfu)``, per epoch and for ``epochs``."""
    if not 0.0 < mfu <= 1.0:
        raise UserError(f"--mfu {mfu} is not a utilisation in (0, 1]", hint="e.g. --mfu 0.4")
    seconds = tokens_per_epoch * flops.train / (gpus * gpu.bf16_tflops * 1e12 * mfu)
    hours = seconds / 3600
    return TimeEstimate(gpu.name, gpus, gpu.bf16_tflops, mfu, tokens_per_epoch, tokens_source, epochs, flops,
                        hours, hours * epochs)


def parse_count(text: str) -> int:
    """``1.6M``, ``250k``, ``2e6``, ``3B``, ``1200000`` -> an integer count."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmb]?)\s*", text, flags=re.IGNORECASE)
    if not match:
        raise UserError(f"--tokens-per-epoch '{text}' is not a count", hint="write e.g. 1.6M, 250k or 2e6")
    scale = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}[match.group(2).lower()]
    return int(float(match.group(1)) * scale)
