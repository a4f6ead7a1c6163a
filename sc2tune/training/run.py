"""``train(recipe)``: the whole fine-tuning run, from recipe to adapter folder.

The run folder's layout, every path of it, is :class:`sc2tune.runs.RunFolder`'s. Every file is written
atomically (:mod:`sc2tune.atomic`), except ``metrics.jsonl``, appended to line by line (``--resume`` drops a
line cut short). ``output_dir`` must be a new folder, an empty one, or an earlier run's
(:func:`check_output_dir`); any other folder is refused before anything is written into it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainingArguments, set_seed
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_callback import ProgressCallback as HFProgressCallback
from transformers.trainer_utils import get_last_checkpoint

from sc2tune.adapters import (
    attach_adapter,
    base_model_reference,
    keep_initial_adapter,
    save_converted_adapter,
)
from sc2tune.atomic import publish, remove, write_file
from sc2tune.errors import DiskFullError, UserError, is_disk_full
from sc2tune.modeling import Objective, load_model, load_tokenizer, objective_for, resolve_dtype
from sc2tune.recipe import Recipe, check_trackers_installed, recipe_to_yaml
from sc2tune.runs import (
    ADAPTER_CONFIG,
    LABELS_FILE,
    RECIPE_FILE,
    RunFolder,
    is_run_folder,
    read_json_object,
)
from sc2tune.training.callbacks import (
    MetricsFileCallback,
    NanGuardCallback,
    PreemptionCallback,
    ProgressCallback,
    ThroughputCallback,
    finite_or_none,
)
from sc2tune.training.distributed import (
    EngineRecordCallback,
    check_launch,
    check_whole_parameters,
)
from sc2tune.training.dropout import use_sparse_lora_dropout
from sc2tune.training.fimprobe import MIN_LINE_CHARS, build_probe
from sc2tune.training.outlock import output_lock
from sc2tune.training.portable import save_classifier_files
from sc2tune.training.precision import keeps_fp32_master, save_rounded, training_source
from sc2tune.training.resume import resume_checkpoint, trim_metrics
from sc2tune.training.trackers import TRACKIO_PROJECT, integrations, tracker_session
from sc2tune.training.trainer import Sc2Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or preempted) run produced."""

    output_dir: Path
    adapter_dir: Path | None
    global_step: int
    preempted: bool
    final_eval: dict[str, float] = field(default_factory=dict)
    train_tokens_per_second: float | None = None
    skipped_steps: int = 0
    model: Any = field(default=None, repr=False, compare=False)  # the trained model, for further use in Python


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 of the eval predictions (see :mod:`sc2tune.metrics`)."""
    from sc2tune.metrics import classification_report

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    predictions = np.asarray(logits).argmax(-1).tolist()
    report = classification_report(np.asarray(eval_pred.label_ids).tolist(), predictions)
    return {"accuracy": report.accuracy, "macro_f1": report.macro_f1}


def _class_weights(recipe: Recipe, counts: dict[str, int] | None, id2label: dict[int, str] | None
                   ) -> torch.Tensor | None:
    spec = recipe.train.class_weights
    if spec is None:
        return None
    if isinstance(spec, list):
        if id2label is not None and len(spec) != len(id2label):
            raise UserError(f"train.class_weights has {len(spec)} weights for {len(id2label)} labels")
        return torch.tensor(spec, dtype=torch.float32)
    # balanced: w_c = N / (K * n_c)
    assert counts is not None and id2label is not None
    n = np.array([counts[id2label[i]] for i in range(len(id2label))], dtype=np.float64)
    return torch.tensor(n.sum() / (len(n) * n), dtype=torch.float32)


def _training_arguments(recipe: Recipe, objective: Objective, out: Path, has_eval: bool, *,
                        resuming: bool = False) -> TrainingArguments:
    """The recipe as transformers' arguments. ``output_dir`` is where transformers writes a checkpoint:
    ``checkpoints/.staging``, from which :class:`~sc2tune.training.trainer.Sc2Trainer` renames each complete one
    into ``checkpoints/``."""
    t = recipe.train
    dtype = resolve_dtype(recipe.model.dtype)
    cuda = torch.cuda.is_available()
    save = {"save_strategy": "steps", "save_steps": t.save_steps} if t.save_steps else {"save_strategy": "epoch"}
    if not has_eval:
        evaluation = {"eval_strategy": "no"}
    elif t.eval_steps:
        evaluation = {"eval_strategy": "steps", "eval_steps": t.eval_steps}
    else:
        evaluation = {"eval_strategy": "epoch"}
    if not t.shuffle:
        sampling = "sequential"
    elif objective.causal and not recipe.data.packing:
        sampling = "group_by_length"  # padded causal batches: similar lengths, little padding
    else:
        sampling = "random"
    return TrainingArguments(
        output_dir=str(RunFolder(out).checkpoint_staging),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        seed=t.seed,
        data_seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_on_start=has_eval and not resuming,  # the untrained model's eval loss: the baseline every later eval is read against
        prediction_loss_only=objective.causal,  # causal evaluation keeps no logits
        report_to=integrations(t.report_to),  # wandb / mlflow / trackio; TensorBoard is our own writer
        run_name=out.name,
        project=TRACKIO_PROJECT,
        save_total_limit=t.save_total_limit,
        bf16=(cuda or keeps_fp32_master(recipe)) and dtype == torch.bfloat16,  # autocast (CPU too for fp32 masters)
        fp16=cuda and dtype == torch.float16,
        use_cpu=not cuda,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=t.dataloader_workers,
        train_sampling_strategy=sampling,
        disable_tqdm=True,
        ddp_find_unused_parameters=False,
        average_tokens_across_devices=True,
        **save,
        **evaluation,
    )


def check_output_dir(out: Path) -> None:
    """Refuse an ``output_dir`` a run may not write into, before anything is written there.

    A run starts only in a new folder, an empty one, or a folder that is already an sc2tune run
    (:func:`sc2tune.runs.is_run_folder`: it holds ``.sc2tune-train.lock``, which every run writes first, or a
    ``recipe.yaml`` beside ``adapter/``, ``model/`` or ``checkpoints/``); there ``--resume`` decides as before.
    Anything else (a file, a user's project folder, ``/``, a home folder) is a UserError naming it.
    """
    hint = "give the run a folder of its own: output_dir=runs/NAME (a new or empty folder)"
    if out.is_symlink() and not out.exists():
        raise UserError(f"output_dir {out} is a broken symlink", hint=hint)
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"output_dir {out} exists and is not a folder", hint=hint)
    try:
        names = sorted(p.name for p in out.iterdir())
    except OSError as err:
        raise UserError(f"output_dir {out}: cannot list it ({err.strerror})", hint=hint) from None
    if not names or is_run_folder(out):
        return
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise UserError(
        f"output_dir {out} is a folder that is not an sc2tune run (it holds {shown}); a run writes only into a "
        "new folder, an empty one, or an earlier run's folder, so nothing was written there", hint=hint)


def _prepare_output(out: Path, resume: bool, *, main_process: bool, max_steps: int | None) -> str | None:
    """Checkpoint to resume from (or None); refuses to train over an existing run without --resume.

    With ``resume``: the newest intact checkpoint (:mod:`sc2tune.training.resume`); one past
    ``train.max_steps`` is refused (resuming would train nothing)."""
    run = RunFolder(out)
    checkpoints = run.checkpoints
    if resume:
        last, step = resume_checkpoint(checkpoints, main_process=main_process)
        if last is None:
            log.warning("--resume: no complete checkpoint in %s, starting from the beginning", checkpoints)
        elif max_steps is not None and step > max_steps:
            raise UserError(f"--resume: {last} is at step {step}, past train.max_steps={max_steps}: resuming "
                            "would train nothing", hint=f"set train.max_steps above {step} to train on, or start "
                            "a new run: output_dir=runs/NEW")
        if main_process:
            trim_metrics(run.metrics, step)
        return last
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    leftovers = [path.name for path in (run.adapter, run.full, run.metrics) if path.exists()]
    if last is not None or leftovers:
        raise UserError(
            f"{out} already holds a run ({checkpoints.name if last else leftovers[0]})",
            hint="pass --resume to continue it (or to restart it in place when it has no checkpoint), "
            "or set output_dir=... to start a new one",
        )
    return None


def _pinned_data(out: Path) -> tuple[str | None, str | None]:
    """(the prepared data folder the run in ``out`` started with if it is still there, the checksum
    data.json recorded for it)."""
    record = RunFolder(out).data_record
    if not record.is_file():
        return None, None
    try:
        values = read_json_object(record)
    except UserError as err:
        log.warning("--resume: %s; looking the prepared data up by its key (the same inputs rebuild the same "
                    "rows)", err)
        return None, None
    folder = values.get("prepared")
    checksum = values.get("checksum")
    if isinstance(folder, str) and folder and (Path(folder) / "meta.json").is_file():
        return folder, checksum if isinstance(checksum, str) else None
    log.warning("--resume: the prepared data this run started with (%s) is gone; looking it up by its key "
                "(the same inputs rebuild the same rows)", folder)
    return None, None


def _absolute_paths(recipe: Recipe) -> Recipe:
    """The recipe with local data/template/model paths made absolute, so a run folder describes itself
    wherever it is evaluated or resumed from (hub ids and the built-in model are left as they are)."""

    def fix(value):
        if isinstance(value, list):
            return [fix(v) for v in value]
        if not isinstance(value, str) or value.startswith("hub:") or Path(value).is_absolute():
            return value
        has_glob = any(c in value for c in "*?[")
        return os.path.abspath(value) if has_glob or Path(value).exists() else value

    data = recipe.data.model_copy(update={
        "train": fix(recipe.data.train),
        "eval": fix(recipe.data.eval) if isinstance(recipe.data.eval, (str, list)) else recipe.data.eval,
        "template": fix(recipe.data.template) if recipe.data.template.endswith((".yaml", ".yml"))
        else recipe.data.template,
    })
    model = recipe.model
    if Path(model.name_or_path).is_dir():
        model = model.model_copy(update={"name_or_path": os.path.abspath(model.name_or_path)})
    return recipe.model_copy(update={"data": data, "model": model})


def train(recipe: Recipe, *, resume: bool = False, show_progress: bool = True) -> TrainResult:
    """Fine-tune the recipe's model on its data and write the adapter (layout: :class:`~sc2tune.runs.RunFolder`).

    The run holds an exclusive lock on ``output_dir`` throughout (:mod:`sc2tune.training.outlock`): a second
    ``train`` into the same folder stops with an error instead of interleaving with this one.

    Under a launcher (``accelerate launch``, ``torchrun``) the run initialises the process group itself; it ends
    it when it returns or raises (:func:`_end_process_group`). A group the caller initialised is left as it is.
    """
    from sc2tune.training.deepspeed_check import check_this_launch

    check_this_launch()  # before any process group, data or model
    check_trackers_installed(recipe)
    recipe = _absolute_paths(recipe)
    out = Path(recipe.output_dir)
    check_output_dir(out)
    callers_group = _process_group_initialised()
    try:
        main_process = _is_main_process()
        with output_lock(out, main_process=main_process), \
                tracker_session(recipe.train.report_to, out.name, out, main_process=main_process, resume=resume):
            return _train(recipe, out, resume=resume, show_progress=show_progress, main_process=main_process)
    finally:
        if not callers_group:
            _end_process_group()


def _process_group_initialised() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _end_process_group() -> None:
    """``torch.distributed.destroy_process_group()`` when a group is up. Without it the group outlives the run:
    gloo's threads still running at interpreter exit abort the process ("terminate called without an active
    exception"), and NCCL warns that the group was not destroyed. accelerate's state is kept (rank and world
    size stay readable: the CLI asks whether this process prints the report); a later ``train`` in the same
    process starts a new group. A failure here is logged, never raised over the run's own result or error."""
    if not _process_group_initialised():
        return
    try:
        torch.distributed.destroy_process_group()
    except Exception as err:  # noqa: BLE001 - the run is over; its outcome matters more than the teardown
        log.warning("could not end the process group: %s", err)


def _is_main_process() -> bool:
    """Whether this is the main process (rank 0; True without a launcher), from accelerate's state.

    The Trainer's arguments set accelerate's state up again later (resetting this one); the process group,
    once initialised here under ``accelerate launch``, is the one they keep, so it is created with their
    settings (CPU, or their ``ddp_timeout`` on GPUs), as if they had created it.
    """
    from datetime import timedelta

    from accelerate import PartialState

    if not torch.cuda.is_available():
        return PartialState(cpu=True).is_main_process
    return PartialState(timeout=timedelta(seconds=TrainingArguments.ddp_timeout)).is_main_process


def _train(recipe: Recipe, out: Path, *, resume: bool, show_progress: bool, main_process: bool) -> TrainResult:
    from sc2tune.data import build_datasets  # noqa: PLC0415 - heavy import, only when training

    check_launch()
    checkpoint = _prepare_output(out, resume, main_process=main_process, max_steps=recipe.train.max_steps)
    set_seed(recipe.train.seed)

    source = training_source(recipe)  # decided once: the recipe, --trust-remote-code confirmed in it
    tokenizer = load_tokenizer(source)
    pinned, checksum = _pinned_data(out) if resume else (None, None)
    data = build_datasets(recipe, tokenizer, show_progress=show_progress, prepared=pinned, prepared_checksum=checksum)
    if len(data.train) == 0:
        raise UserError(f"data.train produced no training examples ({recipe.data.train})")
    out.mkdir(parents=True, exist_ok=True)  # only once the data is known to be good
    run = RunFolder(out)
    if data.prepared is not None and main_process:  # names the prepared rows, so --resume reads those very rows
        write_file(run.data_record, json.dumps({"prepared": data.prepared, "checksum": data.checksum}) + "\n")
    set_seed(recipe.train.seed)  # same head / LoRA initialisation whatever the data step consumed
    model = load_model(source.replace(labels=data.id2label or source.labels), pad_token_id=tokenizer.pad_token_id)
    model = attach_adapter(model, recipe)
    initial = keep_initial_adapter(model, recipe, out, main_process=main_process)
    if not torch.cuda.is_available() and recipe.train.lora_dropout_impl == "sparse":
        use_sparse_lora_dropout(model)  # same distribution, ~p x n random draws instead of n (CPU only)

    objective = objective_for(recipe.task)
    args = _training_arguments(recipe, objective, out, data.eval is not None, resuming=checkpoint is not None)
    classify = objective.loss == "class-cross-entropy"
    class_counts = getattr(data.stats, "class_counts", None)
    fim_probe = build_probe(recipe, data.eval, tokenizer)  # the held-out holes, drawn once (train.eval_fim)
    trainer = Sc2Trainer(
        model=model,
        args=args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=data.collator,
        processing_class=tokenizer,
        compute_metrics=classification_metrics if classify else None,
        objective=objective,
        pad_token_id=tokenizer.pad_token_id,
        loss_chunk_size=recipe.train.loss_chunk_size,
        loss_impl=recipe.train.loss_impl,
        packed_attention=recipe.train.packed_attention,
        nan_patience=recipe.train.nan_patience,
        class_weights=_class_weights(recipe, class_counts, data.id2label) if classify else None,
        loraplus_lr_ratio=recipe.adapter.loraplus_lr_ratio,
        loraplus_lr_embedding=recipe.adapter.loraplus_lr_embedding,
        fim_probe=fim_probe,
    )
    _check_fim_probe(trainer, recipe)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgressCallback)
    preemption = PreemptionCallback(trainer)
    for callback in (ThroughputCallback(trainer), NanGuardCallback(trainer), preemption,
                     MetricsFileCallback(run.metrics), EngineRecordCallback(trainer, run)):
        trainer.add_callback(callback)
    if show_progress:
        trainer.add_callback(ProgressCallback())
    main_process = trainer.is_world_process_zero()  # the trainer's word from here on
    if main_process:
        if "tensorboard" in recipe.train.report_to:
            _add_tensorboard(trainer, run.tensorboard, checkpoint, resume=resume)
        write_file(run.recipe, recipe_to_yaml(recipe))

    trainer.train(resume_from_checkpoint=checkpoint)
    if checkpoint is not None and trainer.state.global_step > trainer.state.max_steps:
        raise UserError(f"--resume: {checkpoint} is at step {trainer.state.global_step}, past the end of this run "
                        f"({trainer.state.max_steps} steps): nothing was trained and no adapter was written",
                        hint="raise train.epochs or train.max_steps to train on, or start a new run: "
                        "output_dir=runs/NEW")

    tokens = torch.tensor(float(trainer.input_tokens), device=trainer.accelerator.device)
    if trainer.accelerator.num_processes > 1:
        tokens = trainer.accelerator.reduce(tokens, reduction="sum")
    tokens_per_second = float(tokens) / trainer.step_seconds if trainer.step_seconds > 0 else None

    if preemption.preempted:
        log.warning("preempted at step %d: checkpoint saved; run again with --resume", trainer.state.global_step)
        return TrainResult(out, None, trainer.state.global_step, True,
                           train_tokens_per_second=tokens_per_second, skipped_steps=trainer.skipped_steps,
                           model=trainer.model)

    final_eval = _final_evaluation(trainer) if data.eval is not None else {}
    adapter_dir = run.trained(recipe.adapter.method)
    staging = run.trained_staging(recipe.adapter.method)
    if main_process:
        remove(staging)  # a killed run's leftover
    trainer.accelerator.wait_for_everyone()
    try:
        if trainer.is_fsdp_enabled:  # collective: every rank's shards gathered, rank 0 gets the whole state dict
            whole = trainer.accelerator.get_state_dict(trainer.model)
            if main_process:
                trainer.save_whole(staging, whole)
        elif keeps_fp32_master(recipe):  # fp32 master rounded once to the recipe's dtype (never under FSDP/ZeRO)
            if main_process:
                save_rounded(trainer.accelerator.unwrap_model(trainer.model), staging, resolve_dtype(recipe.model.dtype))
        else:
            trainer.save_model(str(staging))  # every rank: gathering sharded weights (ZeRO-3) is collective
        trainer.accelerator.wait_for_everyone()
        if main_process:
            if initial is not None:  # PiSSA / OLoRA: saved as a rank-2r LoRA on the original base
                save_converted_adapter(trainer.model, staging, initial)
            _finish_output(staging, tokenizer, recipe, data.id2label, trainer.model.config)
    except Exception as err:
        if main_process:
            remove(staging)
        if is_disk_full(err):
            raise DiskFullError(f"the disk filled up while saving the trained {adapter_dir.name} in {out}",
                                hint="free some space and run the same command with --resume: the last "
                                "checkpoint in checkpoints/ is complete") from None
        raise
    if main_process:
        publish(staging, adapter_dir, replace=True)
        summary = {
            "task": recipe.task,
            "method": recipe.adapter.method,
            "global_step": trainer.state.global_step,
            "final_eval": {k: finite_or_none(v) for k, v in final_eval.items() if isinstance(v, (int, float))},
            "train_tokens_per_second": tokens_per_second,
            "train_input_tokens": int(tokens),
            "skipped_steps": trainer.skipped_steps,
            "data": data.stats.to_dict(),
        }
        write_file(run.summary, json.dumps(summary, indent=2))
        _plot(run, f"{recipe.task}, {recipe.adapter.method}")
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out, adapter_dir, trainer.state.global_step, False, final_eval, tokens_per_second,
                       trainer.skipped_steps, model=trainer.model)


def _check_fim_probe(trainer: Sc2Trainer, recipe: Recipe) -> None:
    """Refuse ``train.eval_fim`` where the engine keeps no parameters whole (FSDP1, ZeRO-3); the default is
    turned off there with a warning."""
    probe = trainer.fim_probe
    if probe is None:
        if recipe.eval_fim_holes and recipe.task == "fim" and trainer.eval_dataset is not None:
            log.warning("train.eval_fim: the held-out documents hold no line of %d+ characters to fill; no FIM "
                        "scores are logged", MIN_LINE_CHARS)
        return
    why = check_whole_parameters(trainer)
    if why is None:
        log.info("train.eval_fim: %d held-out line holes filled at each evaluation", len(probe))
        return
    if recipe.train.eval_fim is not None:
        raise UserError(f"train.eval_fim={recipe.train.eval_fim} cannot run under this launch: {why}",
                        hint="set train.eval_fim=0 (sc2tune eval RUN scores infilling after training), or launch "
                        "with DDP or FSDP2 (fsdp_config.fsdp_version: 2)")
    log.warning("train.eval_fim is off for this launch (%s); sc2tune eval RUN scores infilling after training", why)
    trainer.fim_probe = None


def _final_evaluation(trainer: Sc2Trainer) -> dict[str, float]:
    """Eval metrics at the last step: reused when the schedule just evaluated there, else computed."""
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return {k: v for k, v in last.items() if k.startswith("eval_") or k == "epoch"}
    return trainer.evaluate()


def _finish_output(folder: Path, tokenizer, recipe: Recipe, id2label: dict[int, str] | None, model_config) -> None:
    """Add tokenizer, resolved recipe and label map to the saved adapter/model, and name the base as the
    user did (hub id or built-in name rather than a cache path). A classifier adapter also gets what plain
    transformers + PEFT need to use it as trained (:mod:`sc2tune.training.portable`)."""
    tokenizer.save_pretrained(str(folder))
    (folder / RECIPE_FILE).write_text(recipe_to_yaml(recipe))
    if id2label is not None:
        (folder / LABELS_FILE).write_text(json.dumps({str(k): v for k, v in id2label.items()}, indent=2))
    config_path = folder / ADAPTER_CONFIG
    if config_path.is_file():  # an adapter (a full fine-tune's model/ has none)
        if id2label is not None:
            save_classifier_files(folder, model_config, recipe.data)
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_model_reference(recipe.model.name_or_path)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    (folder / "training_args.bin").unlink(missing_ok=True)  # written by save_model; not part of an adapter
    folder.chmod(0o755)


def _plot(run: RunFolder, title: str) -> None:
    """``loss.png`` from ``metrics.jsonl`` (train and eval loss against the step)."""
    from sc2tune.reporting import plot_loss_curves, read_metrics

    train_points, eval_points = read_metrics(run.metrics)
    if train_points or eval_points:
        plot_loss_curves(train_points, eval_points, run.loss_plot, title=title)


def _add_tensorboard(trainer: Sc2Trainer, folder: Path, checkpoint: str | None, *, resume: bool) -> None:
    """TensorBoard's writer into ``folder``, one run for the whole training: resuming from ``checkpoint-N``, it
    marks the new event file with ``purge_step=N+1`` (TensorBoard's restart marker: steps after N logged before
    a kill are dropped, the resumed run's stand); resuming without a checkpoint (a start over), ``purge_step=0``."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback
    except ImportError:  # tensorboard is a dependency, but stay usable without it
        log.info("tensorboard not installed: no TensorBoard logs")
        return
    purge_step = (int(Path(checkpoint).name.rsplit("-", 1)[1]) + 1 if checkpoint else 0) if resume else None
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(folder), purge_step=purge_step)))
