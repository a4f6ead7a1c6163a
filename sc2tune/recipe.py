"""The recipe: one YAML file that says which model, which adapter, which task, which data and how to train.

``load_recipe(path, overrides)`` reads the YAML, applies ``key.sub=value`` overrides (values typed as
YAML: ``train.lr=1e-4``, ``data.eval=null``, ``adapter.target_modules=[q_proj,v_proj]``), validates the
result against the schema below and returns a frozen :class:`Recipe`. Every field carries its
documentation; the same text is the JSON schema (``sc2tune schema``).

Any problem raises :class:`~sc2tune.errors.RecipeError` naming the file, the key path, the YAML line
where there is one, what is wrong and, for a misspelt key, the closest valid name.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from sc2tune.errors import RecipeError

TINY_MODEL = "sc2tune/tiny-starcoder2"

#: The override with which a caller says yes to a model's own code (what ``--trust-remote-code`` adds): the
#: only way a recipe's ``model.trust_remote_code: true`` is accepted (:func:`load_recipe`).
REMOTE_CODE_OVERRIDE = "model.trust_remote_code=true"

Dtype = Literal["auto", "bfloat16", "float16", "float32"]
Task = Literal["instruct", "fim", "classify"]
Head = Literal["causal-lm", "sequence-classification"]
Tracker = Literal["tensorboard", "wandb", "mlflow", "trackio", "none"]

#: The trackers that are optional extras: tracker name -> (module whose presence is checked, pip extra).
TRACKER_EXTRAS: dict[str, tuple[str, str]] = {
    "wandb": ("wandb", "wandb"),
    "mlflow": ("mlflow", "mlflow"),  # the mlflow-skinny distribution installs the `mlflow` module
    "trackio": ("trackio", "trackio"),
}

#: ``train.eval_fim`` of a FIM recipe that does not set it: held-out line holes filled at each evaluation
#: (docs/training.md: what they cost on the quickstart).
DEFAULT_EVAL_FIM = 8
#: The model head each task needs: the task alone decides it (``model.head`` is no longer a recipe key).
TASK_HEADS: dict[str, Head] = {"instruct": "causal-lm", "fim": "causal-lm", "classify": "sequence-classification"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelSpec(_Strict):
    """The base model and how to load it."""

    name_or_path: str = Field(
        TINY_MODEL,
        description="Hub id (bigcode/starcoder2-3b, -7b, -15b), a local folder, or the built-in "
        f"'{TINY_MODEL}' (random weights, real architecture and tokenizer; needs no network).",
    )
    dtype: Dtype = Field(
        "auto", description="Weight dtype: auto = bfloat16 where the device supports it, else float32."
    )
    num_labels: int | None = Field(
        None, gt=1, description="Number of classes (classify). Inferred from the training labels if unset."
    )
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = Field(
        "auto", description="Attention kernel: auto = flash_attention_2 on CUDA when installed, else sdpa."
    )
    trust_remote_code: bool = Field(
        False, description="Run the model's own Python code (hub models with auto_map). Takes effect only when "
        "confirmed on the command line (--trust-remote-code or the override model.trust_remote_code=true); a "
        "recipe file that sets it alone is refused, so a downloaded recipe or run folder cannot run code.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) of the base model.")

    #: The head, derived from the recipe's task (:data:`TASK_HEADS`) when the :class:`Recipe` is validated;
    #: not a recipe key. ``_head_given`` keeps what an old recipe still wrote as ``model.head`` (checked there).
    _head: Head = PrivateAttr("causal-lm")
    _head_given: Head | None = PrivateAttr(None)

    @model_validator(mode="wrap")
    @classmethod
    def _take_head(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> ModelSpec:
        """Accept a ``head`` key (old recipes, run folders saved before the task decided the head, and
        ``ModelSpec(head=...)`` in Python without a recipe) outside the schema; :class:`Recipe` checks it."""
        given = None
        if isinstance(data, dict) and "head" in data:
            data = dict(data)
            given = data.pop("head")
            if given not in TASK_HEADS.values():
                raise ValueError(f"model.head '{given}' is not a head; delete model.head: the task decides it")
        spec = handler(data)
        if given is not None:
            spec._head = spec._head_given = given
        return spec

    @property
    def head(self) -> Head:
        """causal-lm (tasks instruct, fim) or sequence-classification (task classify), from the recipe's task."""
        return self._head

    def for_task(self, task: Task) -> ModelSpec:
        """A copy whose :attr:`head` is the one ``task`` needs."""
        spec = self.model_copy()
        spec._head = TASK_HEADS[task]
        spec._head_given = None
        return spec


class QuantSpec(_Strict):
    """bitsandbytes quantisation of the frozen base weights."""

    bits: Literal[4, 8] = Field(4, description="4 = QLoRA (NF4/FP4), 8 = LLM.int8 weights under LoRA.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type (QLoRA uses NF4).")
    double_quant: bool = Field(True, description="Quantise the 4-bit scales too (saves ~0.37 bit/param).")
    compute_dtype: Dtype = Field(
        "auto", description="dtype of the de-quantised matmul: auto = the model dtype."
    )


class AdapterSpec(_Strict):
    """What is trained: LoRA on a 16-bit base, QLoRA on a 4-bit base, or every weight (full)."""

    method: Literal["lora", "qlora", "full"] = Field(
        "lora",
        description="lora: low-rank update W + (alpha/r) B A on a frozen base; qlora: the same on a 4-bit "
        "NF4 base; full: train every weight (no adapter).",
    )
    r: int = Field(16, gt=0, le=4096, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha/r (alpha/sqrt(r) with rslora).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["auto", "all-linear"] = Field(
        "auto",
        description="Module names to adapt. auto = the architecture's linear layers (StarCoder2: q_proj "
        "k_proj v_proj o_proj c_fc c_proj); all-linear = every linear layer but the output head. A name "
        "that matches no module is an error.",
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale alpha/sqrt(r).")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    modules_to_save: list[str] | None = Field(
        None,
        description="Modules trained in full and saved with the adapter. classify adds 'score' itself.",
    )
    quantization: QuantSpec | None = Field(
        None, description="Quantise the frozen base (bitsandbytes). qlora fills in 4-bit NF4 when unset."
    )
    init: str = Field(
        "default",
        pattern=r"^(default|gaussian|pissa|pissa_niter_[1-9][0-9]*|olora|loftq)$",
        description="How A and B start. default: A Kaiming-uniform, B = 0 (the update starts at zero); "
        "gaussian: A ~ N(0, 1/r), B = 0; pissa: B A from the top-r singular vectors of W and the base keeps the "
        "residual W - s B A (pissa_niter_N: randomised SVD with N subspace iterations, fast on large layers); "
        "olora: B A from a QR decomposition of W, the base keeps the residual; loftq (qlora only): B A from the "
        "SVD of the 4-bit quantisation error W - dequant(quant(W)). pissa and olora adapters are saved "
        "converted to apply to the original base, at rank 2r.",
    )
    loraplus_lr_ratio: float | None = Field(
        None, gt=0, le=1024,
        description="LoRA+: the learning rate of B is this ratio times that of A (train.lr); the LoRA+ paper "
        "suggests 16. null = one learning rate for both.",
    )
    loraplus_lr_embedding: float | None = Field(
        None, gt=0,
        description="LoRA+: learning rate of the LoRA factors of embedding layers (a target such as embed_tokens). "
        "null = train.lr, as every A; PEFT's create_loraplus_optimizer and the LoRA+ reference code fix it at "
        "1e-6 whatever train.lr is (embedding adapters then barely move): set 1e-6 to reproduce them.",
    )

    @model_validator(mode="after")
    def _check_init(self) -> AdapterSpec:
        """Combinations of adapter.init / adapter.loraplus_lr_ratio with the other adapter keys."""
        init = self.init
        residual = init == "olora" or init.startswith("pissa")
        if self.method == "full":
            if init != "default":
                raise ValueError(f"adapter.init '{init}' initialises LoRA factors, but adapter.method 'full' has "
                                 "none: use adapter.method lora/qlora, or drop adapter.init")
            if self.loraplus_lr_ratio is not None:
                raise ValueError("adapter.loraplus_lr_ratio sets the learning rate of LoRA's B, but "
                                 "adapter.method 'full' has no LoRA factors: drop one of the two")
        if self.loraplus_lr_embedding is not None and self.loraplus_lr_ratio is None:
            raise ValueError("adapter.loraplus_lr_embedding is a LoRA+ setting, and adapter.loraplus_lr_ratio is "
                             "not set: set the ratio too (the paper suggests 16), or drop loraplus_lr_embedding")
        if residual and self.method == "qlora":
            raise ValueError(f"adapter.init '{init}' rewrites the base weights as a residual, which a 4-bit "
                             "base (adapter.method qlora) cannot hold exactly: use adapter.init loftq for QLoRA, "
                             "or adapter.method lora")
        if residual and self.use_dora:
            raise ValueError(f"adapter.init '{init}' with adapter.use_dora: the adapter could not be saved "
                             "converted to the original base (DoRA's magnitude is taken from the residual base): "
                             "drop one of the two")
        if init == "loftq":
            if self.method != "qlora":
                raise ValueError(f"adapter.init 'loftq' fits B A to the 4-bit quantisation error, but "
                                 f"adapter.method is '{self.method}': set adapter.method qlora")
            if self.use_dora:
                raise ValueError("adapter.init 'loftq' with adapter.use_dora: LoftQ sets A and B but not DoRA's "
                                 "magnitude: drop one of the two")
        return self

    @model_validator(mode="after")
    def _check_quantization(self) -> AdapterSpec:
        if self.method == "qlora":
            if self.quantization is None:
                object.__setattr__(self, "quantization", QuantSpec())
            elif self.quantization.bits != 4:
                raise ValueError("adapter.method 'qlora' needs adapter.quantization.bits: 4")
        elif self.method == "lora" and self.quantization is not None and self.quantization.bits == 4:
            raise ValueError("a 4-bit base with LoRA is QLoRA: set adapter.method: qlora")
        elif self.method == "full" and self.quantization is not None:
            raise ValueError("adapter.method 'full' trains every weight and cannot use a quantised base")
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("adapter.target_modules is empty: name modules, or use 'auto'")
        return self


class FimSpec(_Strict):
    """Fill-in-the-middle transformation of code documents (Bavarian et al. 2022)."""

    rate: float = Field(0.5, ge=0.0, le=1.0, description="Probability that a document is FIM-transformed.")
    spm_rate: float = Field(
        0.5, ge=0.0, le=1.0, description="Of FIM documents, the share in SPM order (the rest are PSM)."
    )
    repo_context: bool = Field(
        False,
        description="Group files by repository (each sub-folder of data.train is a repository) and render "
        "StarCoder2's <repo_name>NAME<file_sep>PATH\\nCODE... format, FIM applied per file.",
    )
    seed: int | None = Field(
        None,
        description="Seed of the training split's FIM draws (which files are FIM'd, PSM or SPM, the cut points) "
        "and of its packing order; null = train.seed. The draws are made once, when the data is prepared, so "
        "every epoch of a run sees the same spans (the rows are built once, cached and pinned for an exact "
        "--resume; drawing them per epoch would prepare the corpus once per epoch): another data.fim.seed gives "
        "other spans while train.seed keeps the initialisation and the data order. The eval split keeps "
        "train.seed + 1, so eval losses stay comparable.",
    )


class DataSpec(_Strict):
    """Where the examples come from and how they become token rows."""

    train: str | list[str] = Field(
        ...,
        description="Training data: JSONL/JSON/CSV/Parquet files or globs, a datasets.save_to_disk folder, a "
        "folder of code (task fim), or a hub dataset id ('hub:owner/name[:split][@revision]').",
    )
    eval: str | list[str] | float | None = Field(
        0.1,
        description="Evaluation data: a path like train, a fraction (0, 1) of train split off "
        "deterministically, or null for none.",
    )
    template: str = Field(
        "alpaca",
        description="Instruction template (task instruct): a name in data_templates/ or a path to a YAML file.",
    )
    train_on_prompt: bool = Field(
        False, description="Also train on the prompt tokens (default: only the response and its eos)."
    )
    max_length: int = Field(1024, gt=8, le=65536, description="Tokens per training row.")
    packing: bool = Field(
        False,
        description="Pack several examples per row, each attending only to itself (position ids restart).",
    )
    fim: FimSpec = Field(default_factory=FimSpec, description="FIM settings (task fim).")
    text_column: str = Field("text", description="Column with the text (fim, classify).")
    text_pair_column: str | None = Field(None, description="Optional second text column (classify).")
    label_column: str = Field("label", description="Column with the class label (classify).")
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Rename source columns to the names the template or task expects: {source: target}.",
    )
    include: list[str] = Field(
        default_factory=lambda: ["*.py"],
        description="Globs of files to read from a folder of code (fim), e.g. ['*.py', '*.rs'].",
    )
    exclude: list[str] = Field(
        default_factory=list, description="Globs of files or folders to skip in a folder of code."
    )
    max_file_bytes: int = Field(1_000_000, gt=0, description="Skip code files larger than this.")
    max_record_bytes: int = Field(
        8 << 20, gt=0, description="Largest JSON line, .json record or CSV row read (bytes, default 8 MiB); a "
        "larger one is an error naming its file and line, raised before it is read whole (each record is held "
        "and tokenised whole). Parquet and datasets are not bounded by it.")
    truncation_side: Literal["left", "right"] = Field(
        "right", description="Which end of an over-long classification text is cut."
    )
    num_proc: int | None = Field(
        None, ge=1, description="Worker processes for reading, FIM and tokenisation (the rows are the same "
        "whatever the number).")
    cache_dir: str | None = Field(
        "auto",
        description="Folder of prepared data (Arrow, memory-mapped; one sub-folder per content key, built once "
        "and shared by every process of a job). auto = $SC2TUNE_CACHE/data, else ~/.cache/sc2tune/data; "
        "null = no cache (prepared the same way into a temporary folder, removed when the process ends).",
    )
    cache_check: Literal["stat", "content"] = Field(
        "stat",
        description="How the cache key sees a source file: stat = path, size, mtime, inode and ctime (no file "
        "read); content = sha256 of its bytes (also verifies every prepared Arrow file in full on use).",
    )
    cache_lock_timeout: float = Field(
        3600.0, gt=0, description="Seconds to wait for another process preparing the same data before "
        "stopping with an error that names it (pid, host).")

    @field_validator("eval")
    @classmethod
    def _eval_fraction(cls, value: Any) -> Any:
        if isinstance(value, float) and not 0.0 < value < 1.0:
            raise ValueError("a fraction for data.eval must be between 0 and 1 (exclusive)")
        return value


class TrainSpec(_Strict):
    """Optimisation and bookkeeping."""

    epochs: float = Field(1.0, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, gt=0, description="Examples (or packed rows) per device per micro-batch.")
    eval_batch_size: int | None = Field(None, gt=0, description="Evaluation batch size (default: batch_size).")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    lr: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    optim: str = Field("adamw_torch", description="transformers optimizer name (e.g. paged_adamw_8bit on GPU).")
    seed: int = Field(42, description="Seed for data order, FIM choices, LoRA init and dropout.")
    save_steps: int | None = Field(None, gt=0, description="Checkpoint every N steps (default: each epoch end).")
    save_total_limit: int | None = Field(2, gt=0, description="Checkpoints kept (oldest removed).")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate every N steps (default: each epoch end).")
    logging_steps: int = Field(10, gt=0, description="Log loss every N steps.")
    eval_fim: int | None = Field(
        None, ge=0, description="fim: at every evaluation, fill this many held-out line holes greedily (the same "
        "seeded holes each time, drawn from the eval split) and log their exact match and edit similarity beside "
        f"eval_loss (eval_fim_exact_match, eval_fim_edit_similarity); 0: off. Default: {DEFAULT_EVAL_FIM} for "
        "task fim, 0 otherwise (other tasks allow only 0).",
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    class_weights: list[float] | Literal["balanced"] | None = Field(
        None, description="classify: per-class loss weights, or 'balanced' (inverse class frequency)."
    )
    nan_patience: int = Field(3, ge=1, description="Stop after this many non-finite losses in a row.")
    dataloader_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    shuffle: bool = Field(
        True, description="Shuffle the training examples (false: keep the data order, e.g. for a curriculum)."
    )
    loss_chunk_size: int = Field(
        1024, gt=0, description="Positions per chunk of the output layer + cross-entropy (causal LM)."
    )
    loss_impl: Literal["chunked", "plain"] = Field(
        "chunked",
        description="Causal-LM loss. chunked: output layer + cross-entropy a chunk of positions at a time, "
        "never holding the full logits (architectures whose logits are the plain output layer, not under "
        "FSDP/ZeRO-3; otherwise plain); plain: full logits + F.cross_entropy (the same value, more memory and "
        "time; what bench/train_speed.py compares against).",
    )
    packed_attention: Literal["per-document", "dense"] = Field(
        "per-document",
        description="Attention of causal tasks on CPU. per-document: each packed document attends only to "
        "itself without building a mask; dense: transformers' sdpa with its (B,1,L,L) packed mask (the same "
        "result, slower; for measurements). GPUs always use transformers' kernel.",
    )
    lora_dropout_impl: Literal["sparse", "peft"] = Field(
        "sparse",
        description="LoRA dropout on CPU. sparse: draws only the dropped positions (about p x n random numbers "
        "instead of n, the same distribution); peft: PEFT's nn.Dropout. GPUs always use PEFT's.",
    )
    report_to: tuple[Tracker, ...] = Field(
        ("tensorboard",),
        description="Where training metrics go, a list (or one name): tensorboard (OUTPUT_DIR/tensorboard/), "
        "wandb, mlflow, trackio (transformers' own integrations; optional extras: pip install "
        "'sc2tune[wandb]', '[mlflow]', '[trackio]' or '[trackers]'), or none alone. The run is named after "
        "output_dir's folder; project, storage and online/offline are the trackers' own settings "
        "(WANDB_PROJECT, WANDB_MODE=offline, WANDB_DIR; MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME; "
        "TRACKIO_DIR; wandb's and trackio's project default to transformers' 'huggingface'). `sc2tune eval "
        "RUN` logs its figures to the same tracker runs (recorded in OUTPUT_DIR/trackers.json).",
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_names(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, (list, tuple)):
            return value  # pydantic's own type error
        known = Tracker.__args__
        for name in names:
            if isinstance(name, str) and name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                raise ValueError(f"unknown tracker {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                                 + f"; choose from {', '.join(known)}")
        if not names:
            raise ValueError("give at least one tracker, or [none] for no tracking")
        if "none" in names and len(names) > 1:
            raise ValueError("'none' stands alone: drop it or the other trackers")
        if len(set(names)) != len(names):
            raise ValueError("a tracker is named twice")
        return tuple(names)


class Recipe(_Strict):
    """A complete, validated fine-tuning recipe."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The base model.")
    adapter: AdapterSpec = Field(default_factory=AdapterSpec, description="What is trained.")
    task: Task = Field(
        ..., description="instruct: template + response-only loss; fim: code with FIM; classify: labels. The "
        "task decides the model head (causal LM for instruct and fim, sequence classification for classify)."
    )
    data: DataSpec = Field(..., description="The data.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training settings.")
    output_dir: str = Field(
        "runs/sc2tune", description="Where the adapter, checkpoints and logs are written: a new folder, an empty "
        "one, or an earlier run's (any other folder is refused).")

    @field_validator("output_dir")
    @classmethod
    def _output_dir_is_a_folder_of_its_own(cls, value: str) -> str:
        path = Path(value.strip()).expanduser().resolve()
        if not value.strip() or path == Path(path.anchor):
            raise ValueError(f"output_dir '{value}' is not a folder of the run's own (it is the filesystem root "
                             "or empty): give one such as runs/NAME")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        implied = TASK_HEADS[self.task]
        given = self.model._head_given
        if given is not None and given != implied:
            raise ValueError(f"model.head '{given}' contradicts task '{self.task}', which needs '{implied}': "
                             "delete model.head (the task decides the head)")
        object.__setattr__(self, "model", self.model.for_task(self.task))
        if self.task != "fim" and self.train.eval_fim:
            raise ValueError(f"train.eval_fim only applies to task 'fim' (this recipe's task is '{self.task}'): "
                             "delete it or set it to 0")
        if self.task != "classify" and self.train.class_weights is not None:
            raise ValueError("train.class_weights only applies to task 'classify'")
        if (
            self.model.num_labels is not None
            and isinstance(self.train.class_weights, list)
            and len(self.train.class_weights) != self.model.num_labels
        ):
            raise ValueError("train.class_weights needs one weight per label (model.num_labels)")
        return self

    @property
    def eval_fim_holes(self) -> int:
        """``train.eval_fim`` as the run uses it: the recipe's value, else ``DEFAULT_EVAL_FIM`` for task fim and
        0 for the others."""
        if self.train.eval_fim is not None:
            return self.train.eval_fim
        return DEFAULT_EVAL_FIM if self.task == "fim" else 0


# --------------------------------------------------------------------------------------------------
# Loading, overrides and error reporting


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``, a classic trap for lr)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    """A mapping in which a key may appear only once (YAML says keys are unique; PyYAML keeps the last)."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first set on line {seen[key]}); keep one of them",
                key_node.start_mark)
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

#: Largest recipe text and largest number of values it may expand to through YAML aliases (``*name``):
#: a real recipe holds a few hundred; an "alias bomb" (each alias naming a list of the previous) expands
#: to billions and would exhaust memory once the values are walked.
MAX_RECIPE_BYTES = 1 << 20
MAX_RECIPE_NODES = 100_000


def _expanded_size(root: yaml.Node) -> int:
    """Number of nodes ``root`` stands for once every alias is expanded (memoised, so linear time)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        if children_done:
            sizes[id(node)] = min(1 + sum(sizes.get(id(c), 1) for c in children), MAX_RECIPE_NODES + 1)
        else:
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _load_yaml(text: str) -> Any:
    """Parse recipe YAML: ``1e-4`` is a float, duplicate keys are errors, alias expansion is bounded."""
    if len(text) > MAX_RECIPE_BYTES:
        raise RecipeError(f"the recipe is {len(text):,} characters; a recipe is a small file (at most "
                          f"{MAX_RECIPE_BYTES:,})", hint="put data in data.train files, not in the recipe")
    try:
        root = yaml.compose(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise RecipeError("the recipe nests lists or mappings too deeply to be a recipe") from None
    if root is None:
        return None
    if _expanded_size(root) > MAX_RECIPE_NODES:
        raise RecipeError(f"the recipe's YAML aliases (*name) expand to more than {MAX_RECIPE_NODES:,} values",
                          hint="write the values out, or use fewer nested anchors/aliases")
    loader = _Loader(text)
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (["a", "b", "c"], value), the value typed as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise RecipeError(
            f"override '{text}' is not of the form key.sub=value",
            hint="for example train.lr=1e-4 or data.eval=null",
        )
    try:
        value = _load_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise RecipeError(f"override '{text}': the value is not valid YAML ({err})") from None
    return key.split("."), value


def _field_names(path: list[str]) -> list[str]:
    """Valid keys at ``path`` in the schema (for suggestions)."""
    model: Any = Recipe
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _submodel(field.annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _submodel(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _suggest(path: list[str]) -> str | None:
    names = _field_names(path[:-1])
    close = difflib.get_close_matches(path[-1], names, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{'.'.join([*path[:-1], close[0]])}'?"
    if names:
        return f"valid keys here: {', '.join(names)}"
    return None


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]][path[1]]... = value``, creating mappings on the way."""
    node = data
    for i, part in enumerate(path[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(path[: i + 1])
            raise RecipeError(f"override {'.'.join(path)}: '{where}' is a value, not a section")
        node = child
    node[path[-1]] = value


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path in a YAML document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return lines

    def walk(node: Any, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = (*prefix, str(key_node.value))
                lines[key] = key_node.start_mark.line + 1
                walk(value_node, key)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                key = (*prefix, str(index))
                lines[key] = item.start_mark.line + 1
                walk(item, key)

    walk(root, ())
    return lines


def _format_validation_error(
    err: ValidationError, source: str, lines: dict[tuple[str, ...], int], overridden: dict[tuple[str, ...], str]
) -> str:
    """One line per error: ``SOURCE:LINE: KEY: what (got VALUE)``, or ``command-line override: ...`` for a value
    an override gave. A cross-field check (a model validator: its error sits on a section, or the top level)
    names its keys in its message; it is blamed on the overrides that set one of them, naming them
    (``command-line override adapter.method=lora: ...``), else on the file line of the first it names."""
    messages = []
    for item in err.errors():
        loc = [str(part) for part in item["loc"]]
        # pydantic adds the union member / literal tag to the location; keep only real keys
        loc = [part for part in loc if not part.startswith(("list[", "literal[", "function-")) and part not in
               {"str", "float", "int", "bool", "dict[str,str]"}]
        key = ".".join(loc) or "(top level)"
        where = source
        line = None
        for depth in range(len(loc), 0, -1):
            if tuple(loc[:depth]) in lines:
                line = lines[tuple(loc[:depth])]
                break
        kind = item["type"]
        text = item["msg"].removeprefix("Value error, ")
        cross = kind == "value_error" and (not loc or isinstance(item.get("input"), dict))
        if cross:
            named = [tuple(k.split(".")) for k in re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+", text)]
            given = [said for path, said in overridden.items()
                     if any(k[: len(path)] == path or path[: len(k)] == k for k in named)]
            line = next((lines[k] for k in named if k in lines), line)
            where = f"command-line override {', '.join(given)}" if given else f"{source}:{line}" if line else where
            messages.append(f"{where}: {text}")
            continue
        if loc and any(path[: len(loc)] == tuple(loc) for path in overridden):
            where = "command-line override"
        elif line is not None:
            where = f"{source}:{line}"
        if kind == "extra_forbidden":
            suggestion = _suggest(loc)
            text = f"unknown key '{key}'" + (f"; {suggestion}" if suggestion else "")
        elif kind == "missing":
            text = f"missing required key '{key}'"
        else:
            text = f"{key}: {text} (got {item.get('input')!r})" if loc else text
        messages.append(f"{where}: {text}")
    # de-duplicate while keeping order (unions report one error per member)
    unique = list(dict.fromkeys(messages))
    return "invalid recipe\n  " + "\n  ".join(unique)


def recipe_from_dict(
    data: dict[str, Any], *, source: str = "<recipe>", overrides: list[str] | tuple[str, ...] = (),
    lines: dict[tuple[str, ...], int] | None = None,
) -> Recipe:
    """Validate a recipe given as a mapping (plus overrides) and return the frozen :class:`Recipe`."""
    data = _deep_copy(data)
    overridden: dict[tuple[str, ...], str] = {}
    for text in overrides:
        path, value = parse_override(text)
        apply_override(data, path, value)
        overridden[tuple(path)] = text.strip()
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_format_validation_error(err, source, lines or {}, overridden)) from None


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read a recipe YAML file, apply ``key.sub=value`` overrides and validate it.

    ``output_dir`` defaults to ``runs/<file stem>`` when the file does not set it.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}", hint="give the path to a YAML recipe, e.g. "
                          "recipes/quickstart/fim.yaml")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start})", hint="save the recipe as UTF-8") from None
    except OSError as err:
        raise RecipeError(f"{path}: cannot read the recipe ({err.strerror})") from None
    try:
        data = _load_yaml(text)
    except RecipeError as err:
        raise RecipeError(f"{path}: {err.args[0]}", hint=err.hint) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(err, "problem", None) or str(err)
        raise RecipeError(f"{where}: malformed YAML: {problem}",
                          hint="check indentation and that every 'key: value' has a space after the colon") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of keys (model, adapter, task, data, train)")
    data.setdefault("output_dir", f"runs/{path.stem}")
    lines = _yaml_lines(text)
    recipe = recipe_from_dict(data, source=str(path), overrides=overrides, lines=lines)
    if recipe.model.trust_remote_code and not _remote_code_on_command_line(overrides):
        line = lines.get(("model", "trust_remote_code"))
        raise RecipeError(
            f"{path}{f':{line}' if line else ''}: model.trust_remote_code is true in the file; sc2tune runs a "
            "model's own Python code only when you ask for it on the command line",
            hint="if you trust the model's code, add --trust-remote-code (or the override "
            "model.trust_remote_code=true); a recipe or run folder from elsewhere never turns it on by itself",
        )
    return recipe


def _remote_code_on_command_line(overrides: list[str] | tuple[str, ...]) -> bool:
    """Whether an override (the command line's say) sets ``model.trust_remote_code`` to true."""
    said = False
    for text in overrides:
        path, value = parse_override(text)
        if path == ["model", "trust_remote_code"]:
            said = value is True  # the last one counts, as when the overrides are applied
    return said


def check_trackers_installed(recipe: Recipe) -> None:
    """Refuse ``train.report_to`` trackers whose package is missing, naming the extra that installs it.

    Called when a run starts, before any data or model is loaded (not at validation: a run folder whose
    recipe names wandb still merges and generates on a machine without wandb).
    """
    import importlib.util

    for name in recipe.train.report_to:
        if name in TRACKER_EXTRAS:
            module, extra = TRACKER_EXTRAS[name]
            if importlib.util.find_spec(module) is None:
                raise RecipeError(f"train.report_to names {name!r}, but the {module} package is not installed",
                                  hint=f"pip install 'sc2tune[{extra}]' (or remove {name} from train.report_to)")


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (saved with every run)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def recipe_json_schema() -> dict[str, Any]:
    """JSON schema of a recipe, with every field's description."""
    return Recipe.model_json_schema()
