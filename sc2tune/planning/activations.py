"""Activation memory of one LoRA/QLoRA training step: what autograd keeps for the backward pass.

Counted tensor by tensor from what PyTorch's autograd saves in a decoder layer (checked against the saved
tensors of a real StarCoder2 step), for ``s = batch x length`` tokens, hidden ``h``, MLP width ``f``,
query width ``h_q``, key/value width ``h_kv``, ``n_h`` heads, element sizes ``e`` (matmul activations) and
``e_res`` (residual stream, norms)::

    norms            per norm: its input s h e_res + LayerNorm mean and rstd 2 s 4  (RMSNorm: s h 4 + s 4)
    attention        SDPA / flash: q s h_q e, k and v s h_kv e each, output s h_q e, logsumexp s n_h 4
                     eager: + the probabilities  batch n_h L^2 (4 + e)
    MLP              GELU input s f e (gated MLP: 3 s f e)
    residual dropout per dropout with p > 0: its mask, s h m (m = 1 byte on CUDA, e on CPU)
    LoRA, per target lora_A's output s r e_lora, and lora_A's input: with dropout a new tensor and its mask
                     s in (e_lora + m); without dropout a cast copy s in e_lora, or nothing new when no cast
                     is needed and the input is shared (q/k/v read the same tensor)
    full training    every linear's input once per shared input (its weight gradient needs it)
    DoRA, per target PEFT's ``(m/||W + s B A|| - 1) * base_out + m/||.|| * lora_out * s`` keeps both outputs
                     for the magnitude's gradient: s out (e + e_lora); and while a target runs, W (cast),
                     B A (fp32, built from an identity) and their sum: out in (e + 8) bytes, transient

Frozen base linears save nothing for themselves (no weight gradient, and the input gradient needs only W).
Without gradient checkpointing the layers' sums add up; with it each layer keeps only its input
(``s h e_res``) and one layer is recomputed at a time. The backward workspace is the largest set of gradient
tensors alive inside one layer: ``2 s h e_res + s f e``.

Loss (causal LM), for ``n`` trained positions and vocabulary ``V``:

* full logits (transformers' ``ForCausalLMLoss``): logits ``s V e``, their fp32 copy and log-softmax
  ``s V 4`` each in the forward; in the backward the saved log-softmax, the incoming gradient and the logits'
  gradient ``3 s V 4``: the peak is ``s V max(e + 4 [if e != 4] + 4, 12)``.
* sc2tune's chunked loss (``train.loss_chunk_size`` = c positions at a time, trained positions only, the
  gradient computed in the forward, in place over the chunk's fp32 logits): the hidden states of the ``n``
  trained positions and their gradient ``2 n h e``, and ``min(c, n) V (4 + 2 e [if e != 4])``: one fp32
  ``(c, V)`` buffer reused in place by every chunk, plus, with 16-bit weights, the matmul's ``(c, V)`` output
  in the weight dtype and the softmax cast back once more (:func:`chunked_loss_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Linear layers that read the same input tensor (LoRA on them can share the saved input).
SHARED_INPUT_GROUPS: tuple[frozenset[str], ...] = (
    frozenset({"q_proj", "k_proj", "v_proj"}),
    frozenset({"query", "key", "value"}),
    frozenset({"gate_proj", "up_proj"}),
    frozenset({"w1", "w3"}),
)


@dataclass(frozen=True)
class ComputeSetup:
    """Element sizes and kernels of the device the step runs on.

    ``gpu(...)``: bf16/fp16 matmuls under autocast, fp32 LoRA weights (PEFT casts the adapter's input to
    fp32 and autocast casts it back, so every adapter saves its own copy), boolean dropout masks (fused
    CUDA dropout). ``cpu()``: everything fp32, dropout saves a float mask, no casts (measured).
    """

    act_bytes: int  #: e: matmul / attention activations
    res_bytes: int  #: e_res: residual stream and norm inputs
    lora_bytes: int  #: e_lora: the input and output lora_A saves
    mask_bytes: int  #: m: one dropout mask element
    lora_input_cast: bool  #: True when the adapter's input is a fresh (cast) copy
    attn: str = "sdpa"  #: sdpa | flash_attention_2 | eager

    @classmethod
    def gpu(cls, dtype_bytes: int = 2, *, fp32_residual: bool = False, attn: str = "sdpa") -> ComputeSetup:
        return cls(act_bytes=dtype_bytes, res_bytes=4 if fp32_residual else dtype_bytes,
                   lora_bytes=dtype_bytes, mask_bytes=1, lora_input_cast=dtype_bytes != 4, attn=attn)

    @classmethod
    def cpu(cls, dtype_bytes: int = 4, *, fp32_residual: bool = False, attn: str = "sdpa") -> ComputeSetup:
        """CPU, no autocast: a 16-bit model's adapters get an fp32 copy of their input (PEFT's cast), and
        dropout keeps a mask of the input's dtype."""
        return cls(act_bytes=dtype_bytes, res_bytes=4 if fp32_residual else dtype_bytes, lora_bytes=4,
                   mask_bytes=4, lora_input_cast=dtype_bytes != 4, attn=attn)


@dataclass(frozen=True)
class LinearSpec:
    """One linear layer of a decoder block: its name inside the block, shape, and what training does to it."""

    name: str
    in_features: int
    out_features: int
    lora: bool  #: a LoRA target
    trained: bool = False  #: the weight itself is trained (full fine-tuning)


@dataclass(frozen=True)
class BlockSpec:
    """The shapes of one decoder layer that determine its saved activations."""

    hidden: int
    intermediate: int
    q_width: int
    kv_width: int
    heads: int
    norms: int
    rms_norm: bool
    gated_mlp: bool
    residual_dropouts: int  #: dropouts with p > 0 on the residual stream per layer
    linears: tuple[LinearSpec, ...]


def _new_input(lin: LinearSpec, counted: set[frozenset[str]]) -> bool:
    """False when ``lin`` reads the same input as a linear of its :data:`SHARED_INPUT_GROUPS` already counted."""
    group = next((g for g in SHARED_INPUT_GROUPS if lin.name.rsplit(".", 1)[-1] in g), None)
    if group in counted:
        return False
    if group is not None:
        counted.add(group)
    return True


def layer_saved_bytes(block: BlockSpec, *, batch: int, length: int, r: int, lora_dropout: float,
                      setup: ComputeSetup, dora: bool = False) -> dict[str, int]:
    """Bytes autograd keeps for one decoder layer, by part (see the module docstring)."""
    s = batch * length
    e, e_res, e_lora, m = setup.act_bytes, setup.res_bytes, setup.lora_bytes, setup.mask_bytes
    h, f = block.hidden, block.intermediate
    if block.rms_norm:
        norms = block.norms * (s * h * e_res + s * h * 4 + s * 4)
    else:
        norms = block.norms * (s * h * e_res + 2 * s * 4)
    attn = s * (2 * block.q_width + 2 * block.kv_width) * e + s * block.heads * 4
    if setup.attn == "eager":
        attn += batch * block.heads * length * length * (4 + e)
    mlp = (3 if block.gated_mlp else 1) * s * f * e
    dropout = block.residual_dropouts * s * h * m
    lora = 0
    lora_inputs: set[frozenset[str]] = set()
    for lin in block.linears:
        if not lin.lora:
            continue
        lora += s * r * e_lora
        if dora:
            lora += s * lin.out_features * (e + e_lora)
        if lora_dropout > 0:
            lora += s * lin.in_features * (e_lora + m)
        elif setup.lora_input_cast or _new_input(lin, lora_inputs):
            lora += s * lin.in_features * e_lora
    full_inputs: set[frozenset[str]] = set()
    full = sum(s * lin.in_features * e for lin in block.linears if lin.trained and _new_input(lin, full_inputs))
    return {"norms": norms, "attention": attn, "mlp": mlp, "dropout": dropout, "lora": lora, "full": full}


def backward_workspace_bytes(block: BlockSpec, *, batch: int, length: int, setup: ComputeSetup) -> int:
    """Gradient tensors alive at once inside one layer's backward: ``2 s h e_res + s f e``.

    (The incoming and the accumulated residual gradient, and the MLP's intermediate gradient; measured on
    CPU the MLP backward is where a layer's backward peaks.)
    """
    s = batch * length
    return 2 * s * block.hidden * setup.res_bytes + s * block.intermediate * setup.act_bytes


def full_logits_loss_bytes(*, tokens: int, vocab: int, setup: ComputeSetup) -> int:
    """Peak of transformers' plain loss: ``s V max(e + 4 [if e != 4] + 4, 12)``."""
    forward = setup.act_bytes + (4 if setup.act_bytes != 4 else 0) + 4
    return tokens * vocab * max(forward, 12)


def chunked_loss_bytes(*, trained: int, hidden: int, vocab: int, chunk: int, setup: ComputeSetup) -> int:
    """Peak of the chunked loss: ``2 n h e + min(c, n) V (4 + 2 e [if e != 4])``.

    One float32 ``(c, V)`` buffer is reused in place by every chunk (sc2tune.training.loss); with 16-bit
    weights the matmul writes a ``(c, V)`` copy in the weight dtype and the softmax is cast back once more.
    """
    per_logit = 4 + (2 * setup.act_bytes if setup.act_bytes != 4 else 0)
    return 2 * trained * hidden * setup.act_bytes + min(chunk, trained) * vocab * per_logit


@dataclass(frozen=True)
class ActivationEstimate:
    """Activation memory of one micro-batch (bytes).

    The step peaks either at the loss (everything saved + the loss) or inside a layer's backward
    (everything saved + that layer's workspace, + the layer's recomputed activations with checkpointing).
    """

    per_layer: int  #: saved by one layer without checkpointing
    no_checkpointing: int  #: saved in the forward without checkpointing: all layers + final norm
    checkpointing: int  #: saved in the forward with checkpointing: layer inputs + final norm
    workspace: int  #: backward workspace of one layer

    def saved(self, gradient_checkpointing: bool) -> int:
        """Bytes kept from the forward for the backward."""
        return self.checkpointing if gradient_checkpointing else self.no_checkpointing

    def backward_extra(self, gradient_checkpointing: bool) -> int:
        """Bytes on top of :meth:`saved` while one layer runs its backward."""
        return self.workspace + (self.per_layer if gradient_checkpointing else 0)

    def peak(self, gradient_checkpointing: bool, loss: int) -> int:
        """Peak of the step's transient memory: saved + max(loss, backward extra)."""
        return self.saved(gradient_checkpointing) + max(loss, self.backward_extra(gradient_checkpointing))


def dora_transient_bytes(block: BlockSpec, *, setup: ComputeSetup) -> int:
    """DoRA's per-target weight temporaries, for the largest target: ``out in (e + 8)``."""
    sizes = [lin.out_features * lin.in_features for lin in block.linears if lin.lora]
    return max(sizes, default=0) * (setup.act_bytes + 8)


def estimate_activations(block: BlockSpec, *, layers: int, batch: int, length: int, r: int,
                         lora_dropout: float, setup: ComputeSetup, dora: bool = False) -> ActivationEstimate:
    """Saved activations of the decoder stack, with and without gradient checkpointing."""
    parts = layer_saved_bytes(block, batch=batch, length=length, r=r, lora_dropout=lora_dropout, setup=setup,
                              dora=dora)
    per_layer = sum(parts.values())
    s = batch * length
    final_norm = s * block.hidden * setup.res_bytes + 2 * s * 4
    layer_input = s * block.hidden * setup.res_bytes
    return ActivationEstimate(
        per_layer=per_layer,
        no_checkpointing=layers * per_layer + final_norm,
        checkpointing=layers * layer_input + final_norm,
        workspace=backward_workspace_bytes(block, batch=batch, length=length, setup=setup)
        + (dora_transient_bytes(block, setup=setup) if dora else 0),
    )
