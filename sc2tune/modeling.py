"""Where a model comes from (:class:`ModelSource`, decided once) and the one place that loads it: tokenizers,
base models, PEFT adapters on top, merged and full fine-tuned folders, configs (``from_pretrained`` of models,
tokenizers and PEFT appears in this module alone).

* Tokenizer: its pad token is ``<fim_pad>``, never eos (:mod:`sc2tune.tokens`, where special tokens are
  looked up by name); ``model.config.pad_token_id`` is set to the same id (the classification head finds
  the last real token through it).
* Remote code: a config's or tokenizer's ``auto_map`` names the model's own Python code; it runs only when
  :attr:`ModelSource.trust_remote_code` (the command line's ``--trust-remote-code``) says so. Without it, a
  ``model_type`` only that code defines is a UserError naming the flag before any of it runs; a built-in one
  (e.g. ``starcoder2``) loads as transformers' own class, the code unused (and unrun), with a warning.
* Model: a hub id, a local folder, or the built-in tiny StarCoder2 (materialised once into a cache folder
  so every code path, quantised loading and streaming merge included, sees an ordinary checkpoint).
  dtype ``auto`` is bfloat16 on a GPU that supports it, else float32. 4-bit NF4 (double quant) or 8-bit
  weights come from bitsandbytes. The head is the causal LM or ``*ForSequenceClassification``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sc2tune.atomic import staged_dir
from sc2tune.errors import UserError
from sc2tune.hub import ensure_hub_reachable
from sc2tune.recipe import TASK_HEADS, TINY_MODEL, Dtype, Head, ModelSpec, QuantSpec, Recipe, Task
from sc2tune.tiny import TINY_SEED, cache_dir, is_tiny, write_tiny_model
from sc2tune.tokens import set_pad_token, special_tokens

if TYPE_CHECKING:  # torch and transformers load where they are used (validate and plan do not need them)
    import torch
    from transformers import BitsAndBytesConfig, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

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


MODEL_CONFIG, TOKENIZER_CONFIG = "config.json", "tokenizer_config.json"
AttnImplementation = Literal["auto", "eager", "sdpa", "flash_attention_2"]


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from and how it is loaded, decided once (from the recipe, a run folder and the
    command line) and then the only thing the loaders below are given.

    * ``name_or_path``: a hub id, a local folder, or the built-in ``sc2tune/tiny-starcoder2`` (the default);
      ``revision``: its hub revision;
    * ``dtype``: ``auto`` (bfloat16 on a GPU that supports it, else float32), ``bfloat16``, ``float16``,
      ``float32``; ``quant``: bitsandbytes 4-bit (QLoRA) or 8-bit weights, None for the weights as stored;
    * ``head``: ``causal-lm`` or ``sequence-classification``; ``labels``: a classifier's classes (id -> name),
      None to keep the folder's own;
    * ``attn``: the attention kernel (``auto``: flash_attention_2 on CUDA when installed, else sdpa; None:
      transformers' default);
    * ``adapter``: a PEFT adapter folder loaded on top for inference (checked by its reader first:
      :func:`sc2tune.runs.load_trained`);
    * ``trust_remote_code``: the model's own Python code (``auto_map``) may run. Only the command line turns it
      on (``--trust-remote-code``, which also confirms a recipe's ``model.trust_remote_code``:
      :func:`sc2tune.recipe.load_recipe`); a recipe or run folder alone never does.
    """

    name_or_path: str = TINY_MODEL
    revision: str | None = None
    dtype: Dtype = "auto"
    quant: QuantSpec | None = None
    head: Head = "causal-lm"
    labels: Mapping[int, str] | None = None
    attn: AttnImplementation | None = "auto"
    adapter: Path | None = None
    trust_remote_code: bool = False

    @classmethod
    def of(cls, spec: ModelSpec, *, quant: QuantSpec | None = None,
           labels: Mapping[int, str] | None = None) -> ModelSource:
        """The source a recipe's ``model`` section names, with ``quant``; a classifier's ``labels`` default to
        ``LABEL_i`` for ``model.num_labels`` classes (2 when unset)."""
        if spec.head == "sequence-classification" and not labels:
            labels = {i: f"LABEL_{i}" for i in range(spec.num_labels or 2)}
        return cls(spec.name_or_path, spec.revision, spec.dtype, quant, spec.head, labels,
                   spec.attn_implementation, trust_remote_code=spec.trust_remote_code)

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> ModelSource:
        """The base model of ``recipe`` as training loads it (its quantisation included)."""
        return cls.of(recipe.model, quant=recipe.adapter.quantization)

    @property
    def classifier(self) -> bool:
        """True for the sequence-classification head."""
        return self.head == "sequence-classification"

    def replace(self, **changes: Any) -> ModelSource:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def ensure_model_reachable(spec: ModelSpec) -> None:
    """Fail in seconds, naming the fixes, when the base model is a hub id and the hub cannot be reached.

    The same test the loaders make, asked before a command imports the
    training stack (torch, transformers, peft: many seconds), so the error comes first (see :mod:`sc2tune.hub`).
    """
    if not is_tiny(spec.name_or_path) and not Path(spec.name_or_path).exists():
        ensure_hub_reachable(spec.name_or_path)


def load_tokenizer(source: ModelSource, *, pad: bool = True, **options: Any) -> PreTrainedTokenizerBase:
    """The tokenizer of ``source`` with its pad token set to ``<fim_pad>`` (never eos; ``pad`` False: as
    saved); ``options`` go to ``AutoTokenizer.from_pretrained`` (e.g. ``padding_side``)."""
    from transformers import AutoTokenizer

    path = _local_path(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, revision=source.revision, trust_remote_code=source.trust_remote_code, **options
        )
    except (OSError, ValueError) as err:
        if not source.trust_remote_code and (tokenizer_names_own_code(Path(path)) or "trust_remote_code" in str(err)):
            raise own_code_refused(Path(path), file=TOKENIZER_CONFIG) from None
        raise UserError(f"cannot load the tokenizer of '{source.name_or_path}': {err}",
                        hint="give a local folder with tokenizer files or a hub id you can reach") from None
    if pad:
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


def resolve_attn(attn: AttnImplementation) -> str:
    """``auto`` = flash_attention_2 on CUDA when the flash-attn package is installed, else sdpa."""
    import torch

    if attn != "auto":
        return attn
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


def load_model(source: ModelSource, *, pad_token_id: int | None = None, device: str | None = None
               ) -> PreTrainedModel:
    """``source``'s model with its head, dtype, attention kernel and quantisation, and its adapter on top.

    ``device`` None (training): a quantised model goes on this process's GPU (the CPU without one) unless FSDP
    places the shards; otherwise where transformers puts it. ``device`` given (inference): the model goes
    there, in eval mode, the adapter frozen. 4-bit layers keep bitsandbytes' training kernel in both
    (:func:`keep_4bit_kernel_exact`). ``pad_token_id`` becomes the config's (a classifier finds the last real
    token through it) and the generation config's.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = _local_path(source)
    dtype = resolve_dtype(source.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype, "revision": source.revision,
                              "trust_remote_code": source.trust_remote_code}
    if source.attn is not None:
        kwargs["attn_implementation"] = resolve_attn(source.attn)
    if source.labels:
        kwargs["num_labels"] = len(source.labels)
        kwargs["id2label"] = {int(k): v for k, v in source.labels.items()}
        kwargs["label2id"] = {v: int(k) for k, v in source.labels.items()}
    if source.quant is not None:
        kwargs["quantization_config"] = quantization_config(source.quant, dtype,
                                                            skip=["score"] if source.classifier else None)
        if device is not None:
            kwargs["device_map"] = {"": device}
        elif not running_under_fsdp():  # FSDP places the shards itself
            kwargs["device_map"] = {"": local_process_index()} if torch.cuda.is_available() else {"": "cpu"}
    loader = AutoModelForSequenceClassification if source.classifier else AutoModelForCausalLM
    try:
        model = loader.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        _refuse_own_code(source, path)
        raise UserError(f"cannot load the model '{source.name_or_path}' ({err})",
                        hint="give a hub id or a local folder with config.json and *.safetensors; "
                        "sc2tune/tiny-starcoder2 works offline") from None
    _warn_own_code_unused(source, path, type(model).__name__)
    if source.quant is not None:
        keep_4bit_kernel_exact(model)  # the numbers the adapter is trained against
    elif device is not None:
        model = model.to(device)
    if pad_token_id is not None:
        model.config.pad_token_id = pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = pad_token_id
    if device is None:
        return model
    return with_adapter(model, source.adapter) if source.adapter is not None else model.eval()


def with_adapter(model: PreTrainedModel, folder: Path) -> Any:
    """PEFT's ``PeftModel.from_pretrained(model, folder)``: the adapter saved in ``folder`` on ``model``,
    frozen, in eval mode (for inference: the caller has checked the folder)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder), is_trainable=False).eval()


def load_config(source: ModelSource) -> PretrainedConfig:
    """``source``'s config (``AutoConfig``), under the same remote-code rule as its model."""
    from transformers import AutoConfig

    path = _local_path(source)
    try:
        config = AutoConfig.from_pretrained(path, revision=source.revision,
                                            trust_remote_code=source.trust_remote_code)
    except (OSError, ValueError) as err:
        _refuse_own_code(source, path)
        raise UserError(f"{path}: cannot read the model's config.json ({err})") from None
    _warn_own_code_unused(source, path, type(config).__name__)
    return config


def load_generation_config(folder: Path) -> Any:
    """The ``generation_config.json`` saved in ``folder``, or None when it has none (or an unreadable one)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(str(folder))
    except (OSError, ValueError):
        return None


def load_peft_config(folder: Path) -> Any:
    """PEFT's own reading of ``folder/adapter_config.json`` (its errors pass through)."""
    from peft import PeftConfig

    return PeftConfig.from_pretrained(str(folder))


def _local_path(source: ModelSource) -> str:
    """The built-in model's folder, a local path, or a hub id checked reachable (fails in seconds if not)."""
    path = resolve_model_path(source.name_or_path)
    if not Path(path).exists():
        ensure_hub_reachable(source.name_or_path)
    return path


def _json_object(file: Path) -> dict[str, Any]:
    """A small JSON file's object, read as data (nothing runs); {} when it is absent, not a regular file,
    larger than 16 MiB, or not a JSON object."""
    try:
        if not file.is_file() or file.stat().st_size > 16 << 20:
            return {}
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def names_own_code(folder: Path) -> bool:
    """Whether ``folder/config.json`` has an ``auto_map`` naming the model's own Python code."""
    return "auto_map" in _json_object(folder / MODEL_CONFIG)


def tokenizer_names_own_code(folder: Path) -> bool:
    """Whether the tokenizer in ``folder`` names its own Python code, as ``AutoTokenizer`` reads it: an
    ``auto_map`` in ``tokenizer_config.json``, or an ``AutoTokenizer`` entry in config.json's ``auto_map``."""
    if _json_object(folder / TOKENIZER_CONFIG).get("auto_map"):
        return True
    auto_map = _json_object(folder / MODEL_CONFIG).get("auto_map")
    return isinstance(auto_map, dict) and "AutoTokenizer" in auto_map


def own_code_refused(folder: Path, *, file: str = MODEL_CONFIG) -> UserError:
    """The error for a model (or, with ``file`` ``tokenizer_config.json``, a tokenizer) that names its own code
    (``auto_map``) when the caller has not said to run it: what is wrong and the flag that says so."""
    whose = "tokenizer" if file == TOKENIZER_CONFIG else "model"
    return UserError(f"{folder}: the {whose}'s {file} names its own Python code (auto_map), which sc2tune "
                     "runs only when you ask for it",
                     hint=f"if you trust the {whose}'s code, add --trust-remote-code (Python: trust_remote_code=True)")


def _refuse_own_code(source: ModelSource, path: str) -> None:
    """After a failed load: the own-code refusal when the folder names code the source may not run."""
    if not source.trust_remote_code and names_own_code(Path(path)):
        raise own_code_refused(Path(path))


def _warn_own_code_unused(source: ModelSource, path: str, built: str) -> None:
    """Log that ``path``'s config.json names its own code (``auto_map``) but, without ``--trust-remote-code``,
    transformers built its own class ``built`` for the config's (built-in) ``model_type`` instead: safe (none
    of the folder's code ran), but the model may differ from its code's."""
    if not source.trust_remote_code and names_own_code(Path(path)):
        log.warning("%s: config.json names the model's own code in auto_map; it was not used (transformers' "
                    "built-in %s was loaded instead); pass --trust-remote-code to use it", path, built)


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
        tokenizer = load_tokenizer(ModelSource.of(spec))  # fails without a pad token or <fim_pad>
    special_tokens(tokenizer, need_fim=task == "fim")  # type: ignore[arg-type]
    return f"tokenizer ok ({len(tokenizer)} tokens, pad {tokenizer.pad_token})"
