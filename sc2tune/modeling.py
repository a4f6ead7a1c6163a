"""Load the tokenizer and the base model a recipe names.

* Tokenizer: its pad token is ``<fim_pad>``, never eos (:mod:`sc2tune.tokens`, where special tokens are
  looked up by name); ``model.config.pad_token_id`` is set to the same id (the classification head finds
  the last real token through it).
* Model: a hub id, a local folder, or the built-in tiny StarCoder2 (materialised once into a cache folder
  so every code path, quantised loading and streaming merge included, sees an ordinary checkpoint).
  dtype ``auto`` is bfloat16 on a GPU that supports it, else float32. 4-bit NF4 (double quant) or 8-bit
  weights come from bitsandbytes. The head is the causal LM or ``*ForSequenceClassification``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sc2tune.atomic import staged_dir
from sc2tune.errors import UserError
from sc2tune.hub import ensure_hub_reachable
from sc2tune.recipe import TASK_HEADS, Dtype, Head, ModelSpec, QuantSpec, Task
from sc2tune.tiny import TINY_SEED, cache_dir, is_tiny, write_tiny_model
from sc2tune.tokens import set_pad_token, special_tokens

if TYPE_CHECKING:  # torch and transformers load where they are used (validate and plan do not need them)
    import torch
    from transformers import BitsAndBytesConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

#: Default LoRA targets per architecture (``config.model_type``). StarCoder2 has no gate/up/down
#: projections: its MLP is c_fc -> GELU -> c_proj. GPTBigCode (StarCoder/StarCoderBase) fuses q, k, v
#: into ``attn.c_attn`` and names its attention output ``attn.c_proj`` and MLP ``mlp.c_fc``/``mlp.c_proj``.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "starcoder2": ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"],
    "gpt_bigcode": ["c_attn", "c_proj", "c_fc"],
}


def resolve_model_path(name_or_path: str) -> str:
    """The built-in tiny model becomes a local folder (written once, atomically); others pass through."""
    if not is_tiny(name_or_path):
        return name_or_path
    target = cache_dir() / f"tiny-starcoder2-s{TINY_SEED}"
    def complete() -> bool:
        return (target / "config.json").is_file() and (target / "model.safetensors").is_file()

    if complete():
        return str(target)
    try:
        with staged_dir(target) as tmp:
            write_tiny_model(tmp, overwrite=True)
    except OSError:  # another process won the race (its copy is identical); ours is dropped
        if not complete():
            raise
    return str(target)


def ensure_model_reachable(spec: ModelSpec) -> None:
    """Fail in seconds, naming the fixes, when the base model is a hub id and the hub cannot be reached.

    The same test :func:`load_tokenizer` and :func:`load_model` make, asked before a command imports the
    training stack (torch, transformers, peft: many seconds), so the error comes first (see :mod:`sc2tune.hub`).
    """
    if not is_tiny(spec.name_or_path) and not Path(spec.name_or_path).exists():
        ensure_hub_reachable(spec.name_or_path)


def load_tokenizer(spec: ModelSpec) -> PreTrainedTokenizerBase:
    """Tokenizer of the base model with the pad token set to ``<fim_pad>`` (never eos)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(spec.name_or_path)
    if not Path(path).exists():
        ensure_hub_reachable(spec.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except (OSError, ValueError) as err:
        own_code = not spec.trust_remote_code and "trust_remote_code" in str(err)  # transformers' refusal
        raise UserError(
            f"cannot load the tokenizer of model.name_or_path '{spec.name_or_path}': "
            + ("it names its own Python code (auto_map), which sc2tune runs only when you ask for it"
               if own_code else str(err)),
            hint="if you trust the model's code, add --trust-remote-code" if own_code
            else "give a local folder with tokenizer files or a hub id you can reach",
        ) from None
    set_pad_token(tokenizer)
    return tokenizer


def resolve_dtype(dtype: Dtype) -> torch.dtype:
    """``auto`` = bfloat16 on a CUDA device that supports it, else float32 (CPU)."""
    import torch

    if dtype == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def resolve_attn(spec: ModelSpec) -> str:
    """``auto`` = flash_attention_2 on CUDA when the flash-attn package is installed, else sdpa."""
    import torch

    if spec.attn_implementation != "auto":
        return spec.attn_implementation
    if torch.cuda.is_available():
        try:
            import flash_attn  # noqa: F401

            return "flash_attention_2"
        except ImportError:
            pass
    return "sdpa"


def running_under_fsdp() -> bool:
    """True when launched by ``accelerate launch`` with an FSDP config.

    The model is loaded before the Trainer sets up accelerate's state, so this asks accelerate's own flag
    parser for the launcher's ``ACCELERATE_USE_FSDP`` (as ``accelerate``'s state does); False without a launcher.
    """
    from accelerate.utils import parse_flag_from_env

    return parse_flag_from_env("ACCELERATE_USE_FSDP", default=False)


def local_process_index() -> int:
    """This process's index on its machine (0 without a launcher), from accelerate's distributed state."""
    from accelerate import PartialState

    return PartialState().local_process_index


def quantization_config(quant: QuantSpec, model_dtype: torch.dtype, *, skip: list[str] | None = None
                        ) -> BitsAndBytesConfig:
    """bitsandbytes config: 4-bit (NF4/FP4, double quant, compute dtype) or 8-bit.

    Under FSDP the packed 4-bit weights are stored in the model dtype (``bnb_4bit_quant_storage``) so FSDP can
    flatten (FSDP1) or shard (FSDP2) them with the other parameters, which are in that dtype: the compute dtype
    by default (``compute_dtype: auto``); an explicit other compute dtype only changes the de-quantised matmul.
    Otherwise they are stored as uint8.
    """
    import torch
    from transformers import BitsAndBytesConfig

    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    compute = model_dtype if quant.compute_dtype == "auto" else getattr(torch, quant.compute_dtype)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=model_dtype if running_under_fsdp() else torch.uint8,
        llm_int8_skip_modules=skip,
    )


def load_model(
    spec: ModelSpec,
    *,
    quant: QuantSpec | None = None,
    id2label: dict[int, str] | None = None,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """Load the base model with the recipe's head, dtype, attention kernel and quantisation."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model_path(spec.name_or_path)
    if not Path(path).exists():
        ensure_hub_reachable(spec.name_or_path)
    dtype = resolve_dtype(spec.dtype)
    kwargs: dict = {
        "dtype": dtype,
        "attn_implementation": resolve_attn(spec),
        "revision": spec.revision,
        "trust_remote_code": spec.trust_remote_code,
    }
    classify = spec.head == "sequence-classification"
    if quant is not None:
        kwargs["quantization_config"] = quantization_config(quant, dtype, skip=["score"] if classify else None)
        if not running_under_fsdp():  # FSDP places the shards itself
            kwargs["device_map"] = {"": local_process_index()} if torch.cuda.is_available() else {"": "cpu"}
    if classify:
        labels = id2label or {i: f"LABEL_{i}" for i in range(spec.num_labels or 2)}
        kwargs["num_labels"] = len(labels)
        kwargs["id2label"] = {int(k): v for k, v in labels.items()}
        kwargs["label2id"] = {v: int(k) for k, v in labels.items()}
    loader = AutoModelForSequenceClassification if classify else AutoModelForCausalLM
    try:
        model = loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise UserError(
            f"cannot load model.name_or_path '{spec.name_or_path}': {err}",
            hint="check the hub id or local folder (config.json + weights); "
            "sc2tune/tiny-starcoder2 works offline",
        ) from None
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = pad_token_id
    if quant is not None:
        keep_4bit_kernel_exact(model)
    return model


def keep_4bit_kernel_exact(model: torch.nn.Module) -> int:
    """Keep bitsandbytes' 4-bit layers on the kernel training uses, in eval mode too; returns how many.

    On CPUs with AVX512-BF16, bitsandbytes (0.50) repacks a 4-bit weight the first time the layer runs in
    eval mode without gradients and from then on computes it with a bf16 inference kernel: the numbers
    are no longer those the adapter is trained against (about 3e-3 per layer), and a training step after
    an evaluation fails (the repacked path adds the bias in place on a tensor that needs its gradient).
    Turning the layer's ``support_avx512bf16_for_cpu`` off keeps the one dequantize-and-matmul path.
    """
    count = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


#: Architectures whose logits are exactly ``lm_head(final hidden state)`` (no scaling or soft-capping),
#: so the trainer's chunked loss applies (and the planner counts it).
CHUNKED_LOSS_ARCHITECTURES = frozenset({"starcoder2", "gpt_bigcode", "llama", "mistral", "qwen2"})


@dataclass(frozen=True)
class Objective:
    """What a task asks of the model and the trainer, decided once here from the recipe's task.

    * ``head``: ``causal-lm`` (``*ForCausalLM``) or ``sequence-classification`` (``*ForSequenceClassification``,
      a ``score`` layer on the last real token);
    * ``loss``: ``token-cross-entropy``: ``sum_t CE(logits_t, y_{t+1})`` over trained positions (label != -100)
      divided by the number of trained tokens of the whole accumulated batch (chunked through the output layer
      for :data:`CHUNKED_LOSS_ARCHITECTURES`); ``class-cross-entropy``: ``mean_i w_{y_i} CE(logits_i, y_i)``
      per micro-batch, optionally class-weighted;
    * ``per_document_attention``: packed rows may attend per document (position ids restart at each
      document); classification rows hold one example each.
    """

    head: Head
    loss: Literal["token-cross-entropy", "class-cross-entropy"]
    per_document_attention: bool

    @property
    def causal(self) -> bool:
        """True for the causal-LM head and its token-level loss."""
        return self.head == "causal-lm"


def objective_for(task: Task) -> Objective:
    """The :class:`Objective` of a recipe task (instruct and fim: causal LM; classify: classification)."""
    head = TASK_HEADS[task]
    if head == "causal-lm":
        return Objective(head, "token-cross-entropy", per_document_attention=True)
    return Objective(head, "class-cross-entropy", per_document_attention=False)


def default_target_modules(model_type: str) -> list[str]:
    """LoRA target names for an architecture; other architectures need an explicit list."""
    if model_type not in DEFAULT_TARGETS:
        raise UserError(
            f"no default LoRA targets for model type '{model_type}'",
            hint="set adapter.target_modules to a list of module names, or 'all-linear'",
        )
    return list(DEFAULT_TARGETS[model_type])


def check_tokenizer(spec: ModelSpec, task: str) -> str:
    """Check, without loading weights, that the base model's tokenizer has what ``task`` needs.

    Only local folders and the built-in model are checked (no network); returns a one-line note. The files
    are read directly (:class:`~sc2tune.tokenizer_files.TokenizerFiles`, no torch) when they say everything
    the check needs, else the tokenizer is loaded through transformers; the checks are the same either way.
    """
    from sc2tune.tiny import TOKENIZER_DIR
    from sc2tune.tokenizer_files import TokenizerFiles

    if not (is_tiny(spec.name_or_path) or Path(spec.name_or_path).expanduser().is_dir()):
        return f"tokenizer of {spec.name_or_path} not checked (not a local folder)"
    folder = TOKENIZER_DIR if is_tiny(spec.name_or_path) else Path(spec.name_or_path).expanduser()
    files = None if spec.trust_remote_code else TokenizerFiles.open(folder)
    if files is not None:
        set_pad_token(files)  # type: ignore[arg-type]
        tokenizer = files
    else:
        tokenizer = load_tokenizer(spec)  # fails without a pad token or <fim_pad>
    special_tokens(tokenizer, need_fim=task == "fim")  # type: ignore[arg-type]
    return f"tokenizer ok ({len(tokenizer)} tokens, pad {tokenizer.pad_token})"
