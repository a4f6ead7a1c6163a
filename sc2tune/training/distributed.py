"""What the launch asked for against what accelerate runs: no silent fallback, FSDP2 on CPU, whole saves.

``accelerate launch --config_file X.yaml`` hands the config to every process as environment variables
(``ACCELERATE_USE_FSDP`` and ``FSDP_*`` for ``distributed_type: FSDP``, ``ACCELERATE_USE_DEEPSPEED`` for
DeepSpeed, ``FSDP_VERSION``); they are read here as accelerate reads them (its flag parser, its plugin), never
under names of sc2tune's own. What each launch gets:

======================================  ==========================================================================
launch asks for                         sc2tune runs
======================================  ==========================================================================
FSDP (v2), CUDA GPUs                    accelerate's FSDP2, unchanged
FSDP (v2), CPU, 2+ processes            FSDP2 on gloo (:func:`adopt_cpu_fsdp`: accelerate 1.16 would run plain DDP)
FSDP (v1), CPU                          refused before training (accelerate stops FSDP1 on CPU with a traceback)
FSDP (v2) + QLoRA, CPU                  FSDP2 on gloo, the packed 4-bit weights sharded too (stored in the model
                                        dtype: :func:`sc2tune.modeling.quantization_config`)
FSDP, one process                       a warning: nothing is sharded
DeepSpeed                               :mod:`sc2tune.training.deepspeed_check` (runs on CPU in fp32)
======================================  ==========================================================================

**The one place accelerate's device gate is lifted** (:func:`adopt_cpu_fsdp`). accelerate 1.16's
``AcceleratorState`` switches to ``DistributedType.FSDP`` only when the process runs on GPU-like devices
(its FSDP branch lists MULTI_GPU, MULTI_XPU, MULTI_NPU, ... and not MULTI_CPU), so an FSDP config launched with
CPU processes silently trains as plain DDP. PyTorch's FSDP2 (``fully_shard``) itself works on a CPU device mesh
with gloo. After the Trainer built its ``Accelerator``, and only for an sc2tune run launched with an FSDP2
config on CPU with several processes, the state is set to what the same launch gets on GPUs: distributed type
FSDP with the plugin accelerate builds from the launcher's variables. Nothing else is touched: model
preparation, sharded checkpoints and state-dict gathering are accelerate's own FSDP2 code.
``tests/training/test_fsdp_cpu.py::test_fsdp_lora_two_processes_equal_one`` fails when a new accelerate
changes that gate (then this function may be dropped or must be revised): the 2-process CPU runs there
assert that the run was FSDP2 *and* that this lift made it so (``cpu_fsdp_gate_lifted`` in the rank records).

Every process writes ``engine/rank-N.json`` into the run folder (:class:`EngineRecordCallback`): the
distributed type accelerate ran, the world size, and the elements and bytes of the parameters, gradients and
optimizer state this rank holds (its DTensor shards under FSDP), next to the whole model's elements: under full
sharding each rank holds about 1/N of them; its peak resident memory.

A sharded FSDP model is saved whole at the end of the run (accelerate's ``get_state_dict``: gathered from the
shards, written by rank 0); Trainer's ``save_model`` writes nothing under ``SHARDED_STATE_DICT`` and its
``FULL_STATE_DICT`` path is where other tools saved only rank 0's slice (accelerate #4206). Checkpoints stay
sharded (each rank writes its own ``.distcp`` files; no rank gathers the model).
"""

from __future__ import annotations

import contextlib
import json
import logging
import resource
import sys
from collections.abc import Iterator
from typing import Any

import torch
from transformers import TrainerCallback

from sc2tune.atomic import write_file
from sc2tune.errors import UserError
from sc2tune.modeling import running_under_fsdp
from sc2tune.runs import RunFolder

log = logging.getLogger(__name__)

def requested_engine() -> str | None:
    """``"fsdp"``, ``"deepspeed"`` or None: the sharding engine ``accelerate launch`` was configured with (the
    launcher's flags, read by accelerate's own parser; the one place sc2tune asks)."""
    from accelerate.utils import parse_flag_from_env

    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED", default=False):
        return "deepspeed"
    if running_under_fsdp():
        return "fsdp"
    return None


def fsdp_version() -> int:
    """The FSDP version the launch asks for: the launcher's ``FSDP_VERSION``, read as accelerate's
    ``FullyShardedDataParallelPlugin`` reads it (default 1). Building that plugin to ask it is no option: under
    FSDP1 on CPU its constructor raises (``sync_module_states`` is GPU-only)."""
    import os

    return int(os.environ.get("FSDP_VERSION", "1"))


def check_launch(*, num_processes: int | None = None, cpu: bool | None = None) -> None:
    """Refuse, before any data or model is loaded, a launch the engine would not run as configured.

    ``num_processes`` and ``cpu`` default to this launch's (accelerate's ``PartialState``, CUDA availability).
    """
    if requested_engine() != "fsdp":  # DeepSpeed is checked first thing in train() (deepspeed_check, per node)
        return
    if num_processes is None:
        from accelerate import PartialState

        num_processes = PartialState().num_processes
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if num_processes < 2:
        log.warning("the launch asks for FSDP with one process: nothing is sharded (the run is FSDP-wrapped on a "
                    "GPU, a plain single-process run on CPU); set num_processes to 2 or more to shard")
        return
    if not cpu:
        return
    version = fsdp_version()
    if version != 2:
        raise UserError(
            f"the launch asks for FSDP version {version} on CPU: FSDP1 does not run on CPU (accelerate stops on "
            "sync_module_states there, and without it would silently train as plain data parallelism)",
            hint="set fsdp_config.fsdp_version: 2 in the accelerate config (as recipes/accelerate/fsdp.yaml has) "
            "to rehearse on CPU (LoRA, QLoRA and full fine-tuning run as FSDP2 there), or run it on CUDA GPUs",
        )


def adopt_cpu_fsdp(accelerator: Any) -> bool:
    """Lift accelerate's device gate for this run: an FSDP2 launch on CPU runs FSDP2 on gloo (module docstring).

    Returns whether the state was changed. Call right after the ``Accelerator`` is built, before anything is
    prepared; :func:`check_launch` has refused the case this does not cover (FSDP1).
    """
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if requested_engine() != "fsdp" or state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()  # what Accelerator() builds from the launcher's FSDP_* variables
    if plugin.fsdp_version != 2:
        return False
    if state.mixed_precision != "no":
        plugin.set_mixed_precision(state.mixed_precision)
    # AcceleratorState and PartialState keep their attributes in class-level shared dicts: this is the state
    # every later accelerate call of this process reads, as the GPU branch of AcceleratorState.__init__ sets it.
    state.distributed_type = DistributedType.FSDP
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    log.info("FSDP2 on CPU (gloo) over %d processes: accelerate's GPU-only FSDP switch lifted for this run",
             state.num_processes)
    return True


def _local_numel(tensor: torch.Tensor) -> int:
    """Elements this rank holds: a DTensor's local shard, else the whole tensor."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel()


def _local_bytes(tensor: torch.Tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def held_by_rank(model: torch.nn.Module, optimizer: Any) -> dict[str, int]:
    """Trainable elements of the whole model, and the elements / bytes this rank's optimizer steps and keeps.

    ``model_elements`` counts every parameter whole (a DTensor's global shape), ``model_elements_held`` what
    this rank stores of them (frozen base weights included: packed 4-bit weights count their storage elements);
    ``model_trainable_elements`` counts each trainable parameter whole;
    ``optimizer_elements`` counts what this rank's optimizer param groups hold (its shards under FSDP);
    ``gradient_bytes`` and ``optimizer_state_bytes`` likewise (gradients of the last step, Adam's moments).
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
    params = [p for group in inner.param_groups for p in group["params"]]
    state_bytes = 0
    for p in params:
        for value in inner.state.get(p, {}).values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                state_bytes += _local_bytes(value)
    return {
        "model_elements": sum(p.numel() for p in model.parameters()),
        "model_elements_held": sum(_local_numel(p) for p in model.parameters()),
        "model_trainable_elements": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "optimizer_elements": sum(_local_numel(p) for p in params),
        "parameter_bytes": sum(_local_bytes(p) for p in params),
        "gradient_bytes": sum(_local_bytes(p.grad) for p in params if p.grad is not None),
        "optimizer_state_bytes": state_bytes,
    }


def peak_rss_bytes() -> int:
    """This process's peak resident memory (``getrusage``; kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


class EngineRecordCallback(TrainerCallback):
    """Writes ``engine/rank-N.json`` (module docstring) after the first optimizer step and at the end."""

    def __init__(self, trainer: Any, run: RunFolder) -> None:
        self.trainer = trainer
        self.run = run
        self.first: dict[str, int] | None = None
        self.gradient_bytes: int | None = None

    def _write(self) -> None:
        accelerator = self.trainer.accelerator
        record = {
            "distributed_type": str(accelerator.distributed_type).rsplit(".", 1)[-1],
            "fsdp_version": accelerator.state.fsdp_plugin.fsdp_version if self.trainer.is_fsdp_enabled else None,
            "cpu_fsdp_gate_lifted": bool(getattr(self.trainer, "cpu_fsdp_adopted", False)),
            "process_index": accelerator.process_index,
            "num_processes": accelerator.num_processes,
            "after_first_step": self.first,
            "peak_rss_bytes": peak_rss_bytes(),
        }
        path = self.run.rank_record(accelerator.process_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_file(path, json.dumps(record, indent=2) + "\n")

    def on_pre_optimizer_step(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201 - TrainerCallback's
        if self.gradient_bytes is None:
            self.gradient_bytes = held_by_rank(self.trainer.model, self.trainer.optimizer)["gradient_bytes"]

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        if self.first is None:
            self.first = {**held_by_rank(self.trainer.model, self.trainer.optimizer),
                          "gradient_bytes": self.gradient_bytes or 0}  # before the step zeroed them
            self._write()

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
        self._write()


@contextlib.contextmanager
def whole_parameters(trainer: Any) -> Iterator[None]:
    """Within the block every process holds the whole parameters of ``trainer.model`` and may run its forward
    any number of times on its own (no collective), e.g. to decode (:meth:`Sc2Trainer.fim_scores`). Collective
    on entry and exit: every process enters and leaves it together.

    * not sharded (one process, DDP, ZeRO-1/2): nothing to do (the caller runs the unwrapped model);
    * FSDP2: every ``fully_shard`` module is unsharded (all-gathered) with ``reshard_after_forward`` off, so a
      forward all-gathers nothing; on exit each is resharded and ``reshard_after_forward`` set back to the
      launch's setting (the root module: off, as FSDP2 keeps it);
    * FSDP1 and ZeRO-3: refused (:func:`check_whole_parameters`, before training)."""
    if not trainer.is_fsdp_enabled:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    root = trainer.model
    modules = [m for m in root.modules() if isinstance(m, FSDPModule)]
    if not modules:
        raise UserError("train.eval_fim: this FSDP model has no FSDP2 module to unshard",
                        hint="set train.eval_fim=0, or launch with fsdp_config.fsdp_version: 2")
    after = trainer.accelerator.state.fsdp_plugin.reshard_after_forward
    for module in modules:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield
    finally:
        for module in modules:
            module.reshard()
            module.set_reshard_after_forward(bool(after) and module is not root, recurse=False)


def check_whole_parameters(trainer: Any) -> str | None:
    """Why :func:`whole_parameters` cannot run for this trainer's engine (FSDP1, DeepSpeed ZeRO-3), else None."""
    if trainer.is_fsdp_enabled and trainer.accelerator.state.fsdp_plugin.fsdp_version != 2:
        return "FSDP1 shards parameters in flat buffers that no process can decode from alone"
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    if trainer.is_deepspeed_enabled and plugin is not None and plugin.zero_stage == 3:
        return "DeepSpeed ZeRO-3 keeps no process's parameters whole"
    return None
