"""Whether a DeepSpeed launch (``recipes/accelerate/deepspeed-zero{2,3}.yaml``) can run as configured here.

What was found on a CPU-only machine (accelerate 1.16, DeepSpeed 0.19.8, torch 2.13 CPU build):

* DeepSpeed itself works on CPU: ``pip install deepspeed`` (the ``deepspeed`` extra; a source package,
  installs in about 15 s, no oneCCL nor intel_extension_for_pytorch needed) selects its CPU accelerator with
  the gloo backend and JIT-builds its shared-memory collective op (ninja and a C++ compiler).
* Through sc2tune it trains: ``accelerate launch --config_file deepspeed-zero{2,3}.yaml`` with only
  ``num_processes: 2`` and ``mixed_precision: 'no'`` changed runs the Trainer's DeepSpeed engine (ZeRO-2 and
  ZeRO-3), each rank's optimizer holding half of the flat fp32 parameters, with the per-step losses of one
  process with twice the batch and the whole adapter saved. It works because sc2tune's runs on CPU build
  their process group first with accelerate's ``PartialState(cpu=True)`` (gloo, the launcher's world size),
  and accelerate's DeepSpeed launcher leaves ``use_cpu`` unset, so ``AcceleratorState`` then switches to
  DeepSpeed on top of that state.
* A plain ``Accelerator()`` does not: without a GPU, accelerate's ``_prepare_backend`` finds no device
  backend (``get_torch_accelerator_backend()`` is ``(None, None)``) and reports ``num_processes=1`` and
  ``process_index=0`` on every rank while DeepSpeed's group has N ranks. sc2tune does not take that path.

* The shipped configs as they are (``mixed_precision: bf16``) stop on CPU with a traceback once the model is
  loaded: transformers' DeepSpeed integration finds ``bf16.enabled`` true while sc2tune's CPU runs train in
  float32 (``ds bf16.enabled=True vs hf bf16=False``).

Hence the policy: a DeepSpeed launch runs on CPU in float32 (to rehearse a ZeRO config before paying for
GPUs) and on GPUs; it is refused before any data or model is loaded when the ``deepspeed`` package is missing,
when it asks for mixed precision on a machine without a GPU, or when it starts more processes than the
machine has GPUs. :func:`deepspeed_blocker` says why (or None), and
:func:`check_deepspeed_launch` raises it as a :class:`~sc2tune.errors.UserError`; ``sc2tune.train`` calls
:func:`check_this_launch` first thing, which does so under a DeepSpeed launch (accelerate's
``ACCELERATE_USE_DEEPSPEED`` flag) with this node's processes (``LOCAL_WORLD_SIZE``, set for every process
by torchrun and ``accelerate launch``; 1 without it), each node judged by its own GPUs.
``tests/training/test_deepspeed.py::test_two_processes_match_one`` proves the CPU run (where ``deepspeed`` is
installed; skipped with :func:`deepspeed_blocker`'s reason otherwise) and fails loudly if a new accelerate
stops running DeepSpeed there (no ZeRO partition files in the checkpoint, or mismatched losses).
"""

from __future__ import annotations

import importlib.util

from sc2tune.errors import UserError

#: How to install DeepSpeed for sc2tune.
INSTALL = "pip install 'sc2tune[deepspeed]'"


def _accelerator() -> tuple[str | None, int]:
    """(device type accelerate's launcher would use, number of such devices); (None, 0) on a CPU-only machine."""
    import torch

    try:
        from accelerate.utils import get_torch_accelerator_backend
    except ImportError:  # accelerate before 1.11: CUDA is the device DeepSpeed needs anyway
        return ("cuda", torch.cuda.device_count()) if torch.cuda.is_available() else (None, 0)
    device, module = get_torch_accelerator_backend()
    if device is None:
        return None, 0
    return device, int(module.device_count()) if hasattr(module, "device_count") else 1


def deepspeed_blocker(num_processes: int, *, accelerator: tuple[str | None, int] | None = None,
                      installed: bool | None = None, mixed_precision: str | None = None) -> str | None:
    """Why a DeepSpeed launch of ``num_processes`` processes cannot run as configured on this machine, or None.

    ``accelerator`` ((device type, count)), ``installed`` and ``mixed_precision`` default to this machine's and
    this launch's (module docstring).
    """
    if installed is None:
        installed = importlib.util.find_spec("deepspeed") is not None
    if not installed:
        return f"DeepSpeed is not installed ({INSTALL})"
    device, count = _accelerator() if accelerator is None else accelerator
    if device is None:  # CPU: DeepSpeed's CPU accelerator on gloo (module docstring), in float32
        if mixed_precision is None:  # the launch's ("no", "fp16", "bf16", "fp8"), as accelerate's launcher hands it
            from accelerate.utils.environment import parse_choice_from_env

            mixed_precision = parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
        if mixed_precision != "no":
            return (f"the accelerate config's mixed_precision is {mixed_precision} on a machine without a GPU: "
                    f"sc2tune trains in float32 on CPU, and DeepSpeed's {mixed_precision} setting contradicts it "
                    "(transformers stops on the mismatch once the model is loaded)")
        return None
    if count < num_processes:
        return (f"the launch starts {num_processes} processes but this machine has {count} {device} device(s): "
                "DeepSpeed needs one device per process")
    return None


def check_deepspeed_launch(num_processes: int, *, accelerator: tuple[str | None, int] | None = None,
                           installed: bool | None = None, mixed_precision: str | None = None) -> None:
    """Raise a :class:`UserError` (before training) when :func:`deepspeed_blocker` names a reason."""
    reason = deepspeed_blocker(num_processes, accelerator=accelerator, installed=installed,
                               mixed_precision=mixed_precision)
    if reason is None:
        return
    if reason.startswith("DeepSpeed is not installed"):
        hint = f"install it: {INSTALL}"
    elif "mixed_precision" in reason:
        hint = "to rehearse on CPU set mixed_precision: 'no' in a copy of the config (or pass --mixed_precision no)"
    else:
        hint = "set num_processes in the accelerate config (or --num_processes) to at most the number of GPUs"
    raise UserError(f"the launch asks for DeepSpeed, but {reason}", hint=hint)


def check_this_launch() -> None:
    """:func:`check_deepspeed_launch` for this process's launch when it asks for DeepSpeed (module doc); else nothing."""
    import os

    from sc2tune.training.distributed import requested_engine

    if requested_engine() != "deepspeed":
        return
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")  # the launcher's, as accelerate's own flags
    check_deepspeed_launch(int(local) if local.isdigit() else 1)
