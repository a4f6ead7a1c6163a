"""Whether a DeepSpeed launch (``recipes/accelerate/deepspeed-zero{2,3}.yaml``) can run as configured here.

What was found on a CPU-only machine (accelerate 1.16, DeepSpeed 0.19.8, torch 2.13 CPU build):

* DeepSpeed itself works on CPU: ``pip install deepspeed`` (the ``deepspeed`` extra; a source package,
  installs in about 15 s, no oneCCL nor intel_extension_for_pytorch needed) selects its CPU accelerator with
  the gloo backend, JIT-builds its shared-memory collective op (ninja + a C++ compiler) and runs ZeRO-2 and
  ZeRO-3 with two processes, each rank's optimizer holding half of the flat fp32 partition.
* accelerate does not start it on CPU. ``AcceleratorState`` switches to DeepSpeed only ``if not cpu``; and
  without ``use_cpu`` its ``_prepare_backend`` finds no GPU-like device (``get_torch_accelerator_backend()`` is
  ``(None, None)``), so although ``deepspeed.comm`` forms a gloo group of N ranks, accelerate's state reports
  ``num_processes=1`` and ``process_index=0`` on every rank: each rank would take whole batches and believe it
  is the main process. sc2tune's own runs on CPU build their state with ``cpu=True`` (gloo DDP), so a DeepSpeed
  config would silently train as plain data parallelism.

Hence the policy: a DeepSpeed launch is refused before any data or model is loaded unless accelerate sees a
GPU-like device and one device per process. :func:`deepspeed_blocker` says why (or None), and
:func:`check_deepspeed_launch` raises it as a :class:`~sc2tune.errors.UserError`.
``tests/training/test_deepspeed.py`` runs DeepSpeed itself on CPU, fails when a new accelerate changes the
CPU behaviour above, and runs the ZeRO-2/3 equality (2 processes x batch 2 == 1 process x batch 4, a whole
saved adapter, one optimizer partition per rank) where :func:`deepspeed_blocker` returns None.
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
                      installed: bool | None = None) -> str | None:
    """Why a DeepSpeed launch of ``num_processes`` processes cannot run as configured on this machine, or None.

    ``accelerator`` ((device type, count)) and ``installed`` default to this machine's (module docstring).
    """
    if installed is None:
        installed = importlib.util.find_spec("deepspeed") is not None
    if not installed:
        return f"DeepSpeed is not installed ({INSTALL})"
    device, count = _accelerator() if accelerator is None else accelerator
    if device is None:
        return ("this machine has no GPU: accelerate starts DeepSpeed only on a GPU-like device (on CPU its state "
                "reports one process on every rank, or runs plain data parallelism with use_cpu), so the ZeRO "
                "config would not be what trains")
    if count < num_processes:
        return (f"the launch starts {num_processes} processes but this machine has {count} {device} device(s): "
                "DeepSpeed needs one device per process")
    return None


def check_deepspeed_launch(num_processes: int, *, accelerator: tuple[str | None, int] | None = None,
                           installed: bool | None = None) -> None:
    """Raise a :class:`UserError` (before training) when :func:`deepspeed_blocker` names a reason."""
    reason = deepspeed_blocker(num_processes, accelerator=accelerator, installed=installed)
    if reason is None:
        return
    raise UserError(
        f"the launch asks for DeepSpeed, but {reason}",
        hint="run DeepSpeed ZeRO configs on CUDA GPUs; to rehearse a sharded run on CPU use "
        "recipes/accelerate/fsdp.yaml with use_cpu: true, num_processes: 2, mixed_precision: 'no'",
    )
