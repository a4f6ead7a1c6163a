"""``Sc2Trainer``: transformers' Trainer with sc2tune's loss, NaN guard, token counting and atomic checkpoints.

The trainer never sees the task: it is handed the :class:`~sc2tune.modeling.Objective` modeling derived
from it, and batches with ``labels``:

* ``token-cross-entropy`` (causal LM): the chunked output-layer cross-entropy over trained positions
  only (:mod:`sc2tune.training.loss`; ``train.loss_impl: plain`` computes the full logits instead),
  normalised by the number of trained tokens in the whole accumulated (and, across processes, gathered)
  batch, so gradient accumulation and data parallelism give the same gradient as one big batch;
* ``class-cross-entropy``: cross-entropy of the ``score`` head's logits, optionally class-weighted, averaged
  per micro-batch.

Evaluation (``eval_loss``) is the mean over the whole eval set, never a mean of batch means:
``sum_i loss_i / sum_i n_i`` with, per row ``i``, ``loss_i`` the summed cross-entropy of its trained tokens and
``n_i`` their number (classification: ``loss_i = w_{y_i} CE_i`` and ``n_i = w_{y_i}``, ``w = 1`` unweighted).
The per-row sums are gathered across processes with ``gather_for_metrics`` (which drops the rows the last
batch repeats to keep processes even), so the figure is the same for any eval batch size and process count.

A non-finite loss is never back-propagated: the micro-batch contributes nothing, the optimizer step of its
window is skipped (gradients dropped) and counted; after ``train.nan_patience`` such steps in a row the run
stops with :class:`NonFiniteLossError` and the last good checkpoint stays as it is.

Checkpoints: transformers writes each one into ``args.output_dir``, which is ``checkpoints/.staging``; the
:class:`~sc2tune.training.callbacks.AtomicCheckpointCallback` this trainer installs renames it to
``checkpoints/checkpoint-N`` once it is complete and flushed (``on_save``), so ``--resume`` never picks up a
half-written one.

Public hooks only, except the transformers methods named in :data:`PRIVATE_TRAINER_METHODS` (called, never
overridden; ``tests/training/test_trainer_hooks.py`` fails when their signatures change).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F  # noqa: N812
from peft import PeftModel
from transformers import Trainer

from sc2tune.atomic import remove
from sc2tune.errors import DiskFullError, UserError, is_disk_full
from sc2tune.modeling import CHUNKED_LOSS_ARCHITECTURES, Objective
from sc2tune.training.attention import plain_attention, use_packed_attention
from sc2tune.training.callbacks import AtomicCheckpointCallback, checkpoint_staging
from sc2tune.training.distributed import adopt_cpu_fsdp, whole_parameters
from sc2tune.training.fimprobe import FimProbe
from sc2tune.training.loss import linear_cross_entropy_sum, output_layer, shifted_trained_positions

log = logging.getLogger(__name__)

#: The private transformers.Trainer methods sc2tune calls (it overrides none), with the parameters it relies
#: on, and why no public hook does the job. ``tests/training/test_trainer_hooks.py`` compares them with the
#: installed transformers, so an upgrade that changes one fails there, loudly, not at a user's first run.
PRIVATE_TRAINER_METHODS: dict[str, tuple[str, ...]] = {
    # get_train_dataloader (public) builds the loader through it; the only public way to hand it a sampler
    # would be to copy its body (collator, workers, seeding, accelerator.prepare), which resuming relies on.
    "_get_dataloader": ("self", "dataset", "description", "batch_size", "sampler_fn", "is_training",
                        "dataloader_key"),
    # training_step (public, overridden for the NaN guard) must prepare inputs as transformers does.
    "_prepare_inputs": ("self", "inputs"),
    # save_model writes nothing whole for a sharded FSDP model; the gathered state dict is saved through it.
    "_save": ("self", "output_dir", "state_dict"),
}


class NonFiniteLossError(UserError):
    """Too many non-finite losses in a row."""


def row_lengths(dataset: Any, length_column: str = "length") -> list[int]:
    """The length of every row of a ``datasets.Dataset``: its ``length_column`` when it has one, else
    ``len(row["input_ids"])`` read off the Arrow list offsets. Read as one Arrow column either way (no row is
    materialised; an index mapping from ``select``/``shuffle`` is honoured)."""
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]
    if length_column in dataset.column_names:
        return table[length_column].to_pylist()
    return pc.list_value_length(table["input_ids"]).to_pylist()


class Sc2Trainer(Trainer):
    """Trainer for sc2tune runs (see module docstring)."""

    def __init__(self, *args: Any, objective: Objective, pad_token_id: int, loss_chunk_size: int = 1024,
                 loss_impl: Literal["chunked", "plain"] = "chunked",
                 packed_attention: Literal["per-document", "dense"] = "per-document",
                 nan_patience: int = 3, class_weights: torch.Tensor | None = None,
                 loraplus_lr_ratio: float | None = None, loraplus_lr_embedding: float | None = None,
                 fim_probe: FimProbe | None = None, **kwargs: Any) -> None:
        """``objective`` from :func:`sc2tune.modeling.objective_for`; ``loss_impl``, ``packed_attention``:
        ``train.loss_impl`` and ``train.packed_attention`` of the recipe (see its schema); ``fim_probe``: the
        held-out holes every evaluation fills (:mod:`sc2tune.training.fimprobe`, ``train.eval_fim``)."""
        self.loraplus_lr_ratio = loraplus_lr_ratio
        self.loraplus_lr_embedding = loraplus_lr_embedding
        super().__init__(*args, **kwargs)
        self.objective = objective
        self.pad_token_id = pad_token_id
        self.loss_chunk_size = loss_chunk_size
        self.loss_impl = loss_impl
        self.packed_attention = packed_attention
        self.nan_patience = nan_patience
        self.class_weights = class_weights
        self.fim_probe = fim_probe
        causal = objective.loss == "token-cross-entropy"
        # The causal loss is normalised by the accumulated trained-token count (num_items_in_batch).
        self.model_accepts_loss_kwargs = causal
        self.loss_is_scaled_for_ga = causal
        self.input_tokens = 0  # non-padding input tokens seen by this process
        self.nan_in_window = False
        self.nan_streak = 0
        self.skipped_steps = 0
        self._use_chunked = causal and self._chunked_loss_applies()
        self.step_seconds = 0.0  # filled in by ThroughputCallback
        self.step_cpu_seconds = 0.0  # process CPU time of the same steps (all threads)
        self._eval_totals: list[float] | None = None  # [sum of row losses, sum of row counts] during evaluation
        self.add_callback(AtomicCheckpointCallback(self))

    def create_accelerator_and_postprocess(self) -> None:
        """transformers' accelerator, then an FSDP2 launch on CPU made real FSDP2 on gloo
        (:func:`sc2tune.training.distributed.adopt_cpu_fsdp`: accelerate alone would run plain DDP)."""
        super().create_accelerator_and_postprocess()
        self.cpu_fsdp_adopted = adopt_cpu_fsdp(self.accelerator)
        if self.cpu_fsdp_adopted:
            self.is_fsdp_enabled = True

    def create_optimizer(self, model: torch.nn.Module | None = None):  # noqa: ANN201 - Trainer's signature
        """LoRA+ (``adapter.loraplus_lr_ratio``): PEFT's ``create_loraplus_optimizer`` puts every LoRA B in a
        group with learning rate ``ratio * lr`` (A and the rest keep ``lr``); otherwise Trainer's optimizer.

        The LoRA factors of embedding layers get ``adapter.loraplus_lr_embedding``, ``lr`` when unset: PEFT's own
        default there is a fixed 1e-6, whatever ``lr`` is."""
        if self.loraplus_lr_ratio is None or self.optimizer is not None:
            return super().create_optimizer(model)
        from peft.optimizers import create_loraplus_optimizer

        target = model if model is not None else self.model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, target)
        lr = optimizer_kwargs.pop("lr", self.args.learning_rate)
        optimizer_kwargs["loraplus_weight_decay"] = self.args.weight_decay
        optimizer_kwargs["loraplus_lr_embedding"] = self.loraplus_lr_embedding or lr
        self.optimizer = create_loraplus_optimizer(target, optimizer_cls, lr=lr,
                                                   loraplus_lr_ratio=self.loraplus_lr_ratio, **optimizer_kwargs)
        return self.optimizer

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add throughput (non-padding input tokens per second of training steps) and skipped steps."""
        if "loss" in logs and self.step_seconds > 0:
            tokens = self.input_tokens * self.accelerator.num_processes  # even shards: exact enough for logs
            logs["input_tokens"] = tokens
            logs["tokens_per_second"] = tokens / self.step_seconds
            logs["step_seconds"] = self.step_seconds
            logs["step_cpu_seconds"] = self.step_cpu_seconds
        if self.skipped_steps:
            logs["skipped_steps"] = self.skipped_steps
        super().log(logs, start_time)

    # ---- attention ----------------------------------------------------------------------------------

    def get_train_dataloader(self):  # noqa: ANN201 - Trainer's signature
        """transformers' training loader, with :meth:`length_grouped_sampler` for ``group_by_length`` over a
        ``datasets.Dataset`` (transformers' own sampler reads every row's length first)."""
        import datasets

        if self.args.train_sampling_strategy != "group_by_length" or not isinstance(self.train_dataset,
                                                                                   datasets.Dataset):
            return super().get_train_dataloader()
        return self._get_dataloader(dataset=self.train_dataset, description="Training",  # PRIVATE_TRAINER_METHODS
                                    batch_size=self._train_batch_size, sampler_fn=self.length_grouped_sampler,
                                    is_training=True)

    def length_grouped_sampler(self, dataset: Any) -> Any:
        """transformers' ``LengthGroupedSampler`` (the same order as its ``group_by_length``), given the lengths
        without reading every row. transformers reads each length through the dataset (its length column as a
        lazy ``datasets`` column, or each row's ``input_ids``): 6 ms a row on a memory-mapped table, 5 minutes
        for 52k rows before the first step. :func:`row_lengths` reads one Arrow column instead."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    dataset=dataset, lengths=row_lengths(dataset, self.args.length_column_name))

    def _attention(self):
        """On CPU, causal tasks attend per document without a dense mask (:mod:`sc2tune.training.attention`),
        unless ``train.packed_attention`` is ``dense``."""
        if (not self.objective.per_document_attention or self.args.device.type != "cpu"
                or self.packed_attention == "dense"):
            return contextlib.nullcontext(False)
        return use_packed_attention(self._inner_causal_lm().config)

    def train(self, *args: Any, **kwargs: Any):
        """transformers' ``train``, with per-document attention on CPU for its duration; a full disk while a
        checkpoint is written is a :class:`DiskFullError` (the half checkpoint removed, the others intact)."""
        try:
            with self._attention():
                return super().train(*args, **kwargs)
        except Exception as err:
            replaced = self._checkpoint_failed(err)
            if replaced is not None:
                raise replaced from None
            raise

    def evaluate(self, *args: Any, **kwargs: Any):
        """transformers' ``evaluate``, with per-document attention on CPU for its duration."""
        with self._attention():
            return super().evaluate(*args, **kwargs)

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,  # noqa: ANN001, ANN201
                        metric_key_prefix="eval"):
        """transformers' loop, with ``{prefix}_loss`` replaced by the whole-set mean (see module docstring):
        transformers averages per-batch means, each weighted by the nominal batch size."""
        self._eval_totals = [0.0, 0.0]
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
            total, count = self._eval_totals
        finally:
            self._eval_totals = None
        key = f"{metric_key_prefix}_loss"
        if key in output.metrics and count > 0:
            output.metrics[key] = total / count
        if self.fim_probe is not None and len(self.fim_probe):
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in self.fim_scores().items()})
        return output

    def fim_scores(self) -> dict[str, float]:
        """The held-out holes of ``fim_probe`` filled by the model as it is now, scored
        (:mod:`sc2tune.training.fimprobe`): ``{"fim_exact_match", "fim_edit_similarity"}``, the same on every
        process.

        Hole ``i`` is filled by process ``i mod world_size`` with the unwrapped model, which runs no collective
        (DDP's forward, with its buffer broadcast, is not called), so processes may take different numbers of
        decoding steps; then every process reaches the one ``gather_object`` of the predictions. FSDP2 parameters
        are unsharded first and resharded after (:func:`whole_parameters`), on every process alike; FSDP1 and
        ZeRO-3 never get here (refused or turned off before training, :func:`check_whole_parameters`).
        Decoding keeps no gradients, leaves the random state of training as it was (its generator is forked)
        and puts the model back in the mode it was in."""
        from accelerate.utils import gather_object

        from sc2tune.training.fimprobe import fill

        probe = self.fim_probe
        assert probe is not None
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        mine = list(range(rank, len(probe), world))
        model = self.accelerator.unwrap_model(self.model)
        with whole_parameters(self), plain_attention(self._inner_causal_lm().config), torch.no_grad(), \
                self.accelerator.autocast():
            lines = fill(model, probe, mine, self.processing_class)
        pairs = list(zip(mine, lines, strict=True))
        if world > 1:
            pairs = gather_object(pairs)
        predictions = dict(pairs)
        return probe.scores([predictions[i] for i in range(len(probe))])

    def _add_eval_rows(self, row_losses: torch.Tensor, row_counts: torch.Tensor) -> None:
        """Add one eval batch's per-row loss sums and counts, gathered from every process."""
        if self._eval_totals is None:
            return
        gathered = self.accelerator.gather_for_metrics(torch.stack([row_losses.float(), row_counts.float()], dim=1))
        sums = gathered.double().sum(0).tolist()
        self._eval_totals[0] += sums[0]
        self._eval_totals[1] += sums[1]

    # ---- loss ---------------------------------------------------------------------------------------

    def _inner_causal_lm(self) -> torch.nn.Module:
        model = self.accelerator.unwrap_model(self.model)
        return model.get_base_model() if isinstance(model, PeftModel) else model

    def _chunked_loss_applies(self) -> bool:
        if self.loss_impl == "plain":
            log.info("train.loss_impl plain: full logits + F.cross_entropy")
            return False
        inner = self._inner_causal_lm()
        if getattr(inner.config, "model_type", None) not in CHUNKED_LOSS_ARCHITECTURES:
            return False
        if output_layer(inner) is None:
            return False
        # Sharded parameters (FSDP, ZeRO-3) are only whole inside the wrapped forward.
        plugin = getattr(self.accelerator.state, "deepspeed_plugin", None)
        zero3 = self.is_deepspeed_enabled and plugin is not None and plugin.zero_stage == 3
        return not (self.is_fsdp_enabled or zero3)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: D401
        """Loss of one micro-batch (see module docstring)."""
        if model.training:
            self.input_tokens += int((inputs["input_ids"] != self.pad_token_id).sum())
        if self.objective.loss == "class-cross-entropy":
            return self._classification_loss(model, inputs, return_outputs)
        labels = inputs.pop("labels")
        per_row = self._eval_totals is not None and not model.training  # evaluation: whole-set token mean
        if self._use_chunked:
            outputs = model(**inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
            head = output_layer(self._inner_causal_lm())
            if per_row:  # one sum per row
                rows = [shifted_trained_positions(h[None], y[None]) for h, y in
                        zip(outputs.hidden_states[-1], labels, strict=True)]
                row_losses = torch.stack([linear_cross_entropy_sum(h, head.weight, head.bias, y, self.loss_chunk_size)
                                          for h, y in rows])
                loss_sum = row_losses.sum()
            else:
                hidden, targets = shifted_trained_positions(outputs.hidden_states[-1], labels)
                loss_sum = linear_cross_entropy_sum(hidden, head.weight, head.bias, targets, self.loss_chunk_size)
            outputs = {}  # no logits are kept: evaluation of causal tasks reports the loss only
        else:
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits[:, :-1].float()
            targets = labels[:, 1:]
            if per_row:
                token_losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                               ignore_index=-100, reduction="none")
                row_losses = token_losses.view(targets.shape).sum(1)
                loss_sum = row_losses.sum()
            else:
                loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                           ignore_index=-100, reduction="sum")
        if per_row:
            self._add_eval_rows(row_losses, (labels[:, 1:] != -100).sum(1))
        if num_items_in_batch is None:
            num_items_in_batch = (labels[:, 1:] != -100).sum()
            world = 1
        else:
            world = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
        denominator = torch.as_tensor(num_items_in_batch, device=loss_sum.device, dtype=torch.float32).clamp(min=1)
        loss = loss_sum / denominator * world
        return (loss, outputs) if return_outputs else loss

    def _classification_loss(self, model, inputs, return_outputs):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits, labels, weight=weight)
        if self._eval_totals is not None and not model.training:
            row_weights = torch.ones_like(logits[:, 0]) if weight is None else weight[labels]
            self._add_eval_rows(F.cross_entropy(logits, labels, reduction="none") * row_weights, row_weights)
        return (loss, outputs) if return_outputs else loss

    # ---- NaN guard -----------------------------------------------------------------------------------

    def training_step(self, model, inputs, num_items_in_batch=None):
        """Forward + backward, except that a non-finite loss is not back-propagated."""
        model.train()
        inputs = self._prepare_inputs(inputs)
        with self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        if not self.loss_is_scaled_for_ga:
            loss = loss / self.current_gradient_accumulation_steps
        finite = torch.isfinite(loss.detach())
        if self.accelerator.num_processes > 1:  # every rank must agree, or DDP would hang
            finite = self.accelerator.reduce(finite.float(), reduction="sum") == self.accelerator.num_processes
        kwargs = {}
        if self.is_deepspeed_enabled:  # the loss is already scaled for accumulation (as transformers does)
            kwargs["scale_wrt_gas"] = False
        if not bool(finite):
            self.nan_in_window = True
            # keep the graph alive for the ranks' gradient hooks without letting any value through; the
            # window's gradients are dropped before the optimizer step (drop_step_if_poisoned)
            self.accelerator.backward(loss.nan_to_num(0.0, 0.0, 0.0) * 0.0, **kwargs)
            return loss.detach()  # non-finite: transformers' logging_nan_inf_filter keeps it out of the logs
        self.accelerator.backward(loss, **kwargs)
        return loss.detach()

    def drop_step_if_poisoned(self) -> bool:
        """Called before the optimizer step: drop the gradients of a window that saw a non-finite loss."""
        if not self.nan_in_window:
            self.nan_streak = 0
            return False
        self.nan_in_window = False
        self.nan_streak += 1
        self.skipped_steps += 1
        for parameter in self.model.parameters():
            parameter.grad = None
        log.warning("non-finite loss at step %d: optimizer step skipped (%d in a row)",
                    self.state.global_step + 1, self.nan_streak)
        if self.nan_streak >= self.nan_patience:
            raise NonFiniteLossError(
                f"the loss was NaN/inf in {self.nan_streak} optimizer steps in a row (step {self.state.global_step + 1})",
                hint="lower train.lr, check the data for empty or broken records, or use float32/bfloat16 "
                "instead of float16; the last good checkpoint is untouched, resume with --resume",
            )
        return True

    # ---- atomic checkpoints --------------------------------------------------------------------------

    def save_whole(self, folder: Path, state_dict: dict[str, torch.Tensor]) -> None:
        """Save the model with ``state_dict`` (an FSDP model's whole state dict, gathered from its shards) into
        ``folder`` as ``save_model`` would; ``save_model`` itself saves nothing whole for a sharded model."""
        self._save(str(folder), state_dict=state_dict)  # private: see PRIVATE_TRAINER_METHODS

    def _checkpoint_failed(self, err: Exception) -> Exception | None:
        """The error to raise instead of ``err`` when it came while a checkpoint was being written (one is in
        the staging folder: :class:`~sc2tune.training.callbacks.AtomicCheckpointCallback` empties it after each
        save), after removing the half-written checkpoint; None otherwise."""
        staging = checkpoint_staging(self.args)
        if staging is None:
            return None
        writing = staging.is_dir() and any(staging.iterdir())
        remove(staging)  # never leave half a checkpoint behind
        if not writing or not is_disk_full(err):
            return None
        run_dir = staging.parent
        return DiskFullError(
            f"the disk filled up while saving checkpoint checkpoint-{self.state.global_step} in {run_dir}",
            hint="free some space (or set train.save_total_limit lower); the checkpoints already in "
            "place are complete: run the same command with --resume to continue from the last one",
        )
