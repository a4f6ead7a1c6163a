"""DeepSpeed ZeRO-2 / ZeRO-3 with the shipped accelerate configs (see sc2tune/training/deepspeed_check.py).

* the refusal policy, from given facts (no DeepSpeed, fewer GPUs than processes; CPU is not refused);
* the equality through ``accelerate launch --config_file recipes/accelerate/deepspeed-zero{2,3}.yaml -m sc2tune
  train`` (only ``num_processes: 2`` and ``mixed_precision: 'no'`` changed): 2 processes x batch 2 give the
  per-step losses of 1 process x batch 4 (``short_reference_run``, tests/training/conftest.py), the adapter is
  saved whole (ZeRO-3 gathers it), and the checkpoint holds one ZeRO optimizer partition per rank, half of the
  trainable elements each (so DeepSpeed, not a fallback, trained). Runs on CPU (gloo) or on 2+ GPUs wherever the
  ``deepspeed`` extra is installed; skipped with :func:`deepspeed_blocker`'s reason, detected at run time,
  elsewhere.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml
from launching import (
    SHORT_STEPS,
    accelerate_command,
    assert_same_losses,
    fim_recipe,
    losses,
    run_ok,
    train_command,
)
from safetensors import safe_open

from sc2tune.errors import UserError
from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train
from sc2tune.training.deepspeed_check import check_deepspeed_launch, deepspeed_blocker

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "accelerate"
NO_DEEPSPEED = importlib.util.find_spec("deepspeed") is None


# --- the policy ---------------------------------------------------------------------------------------------

def test_refused_without_deepspeed() -> None:
    with pytest.raises(UserError, match=r"DeepSpeed is not installed \(pip install 'sc2tune\[deepspeed\]'\)"):
        check_deepspeed_launch(2, accelerator=("cuda", 8), installed=False)


def test_cpu_in_float32_is_not_refused() -> None:
    check_deepspeed_launch(2, accelerator=(None, 0), installed=True, mixed_precision="no")  # CPU accelerator, gloo


def test_mixed_precision_on_cpu_is_refused_naming_the_fix() -> None:
    """The shipped configs as they are (bf16) stop on CPU after the model is loaded: refused up front."""
    with pytest.raises(UserError, match="mixed_precision is bf16 on a machine without a GPU") as err:
        check_deepspeed_launch(2, accelerator=(None, 0), installed=True, mixed_precision="bf16")
    assert "mixed_precision: 'no'" in err.value.hint
    check_deepspeed_launch(2, accelerator=("cuda", 2), installed=True, mixed_precision="bf16")  # GPUs: fine


def test_mixed_precision_is_read_from_accelerate_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """``accelerate launch`` hands the config's mixed_precision to each process as ACCELERATE_MIXED_PRECISION."""
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert deepspeed_blocker(2, accelerator=(None, 0), installed=True) is not None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert deepspeed_blocker(2, accelerator=(None, 0), installed=True) is None


def test_train_refuses_a_deepspeed_launch_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``accelerate launch`` with the shipped bf16 DeepSpeed config hands a process on a machine without a
    GPU: ``sc2tune.train`` refuses it before anything is loaded or written (it used to run on into transformers'
    'ds bf16.enabled=True vs hf bf16=False' traceback)."""
    expected = deepspeed_blocker(1, mixed_precision="bf16")
    if expected is None:
        pytest.skip("this machine runs a bf16 DeepSpeed launch (a GPU is here)")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    recipe = recipe_from_dict(fim_recipe(tmp_path, "refused", batch_size=2))
    with pytest.raises(UserError, match="the launch asks for DeepSpeed"):
        train(recipe, show_progress=False)
    assert not (tmp_path / "refused").exists()  # nothing written


def test_refused_with_fewer_devices_than_processes() -> None:
    with pytest.raises(UserError, match="starts 8 processes but this machine has 2 cuda device"):
        check_deepspeed_launch(8, accelerator=("cuda", 2), installed=True)
    check_deepspeed_launch(2, accelerator=("cuda", 2), installed=True)  # enough: no error


def test_this_machine_is_judged_by_its_devices() -> None:
    """Reference: torch's own device count (and whether the deepspeed package is there)."""
    runnable = not NO_DEEPSPEED and (not torch.cuda.is_available() or torch.cuda.device_count() >= 2)
    assert (deepspeed_blocker(2, mixed_precision="no") is None) == runnable


# --- the equality through sc2tune, where DeepSpeed can run ----------------------------------------------------

def partition_elements(checkpoint: Path) -> dict[int, int]:
    """Elements of the flat fp32 partition in each rank's ZeRO optimizer file of a DeepSpeed checkpoint
    (``*/zero_pp_rank_R_mp_rank_00_optim_states.pt``: ZeRO-2 ``single_partition_of_fp32_groups``, ZeRO-3
    ``fp32_flat_groups``)."""
    found = {}
    for path in sorted(checkpoint.glob("**/*zero_pp_rank_*_mp_rank_00_optim_states.pt")):
        rank = int(path.name.split("zero_pp_rank_")[1].split("_")[0])
        state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        groups = state.get("single_partition_of_fp32_groups", state.get("fp32_flat_groups"))
        found[rank] = sum(t.numel() for t in groups)
    return found


def _two_process_copy(name: str, folder: Path, **changes: object) -> Path:
    """The shipped accelerate config with 2 processes and no mixed precision (fp32: exact equality), as a CPU
    rehearsal would change it."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    config.update({"num_processes": 2, "mixed_precision": "no", **changes})
    path = folder / name
    path.write_text(yaml.safe_dump(config))
    return path


def _tensors(adapter: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter


@pytest.mark.slow
@pytest.mark.skipif(deepspeed_blocker(2, mixed_precision="no") is not None,
                    reason=f"DeepSpeed cannot run here: {deepspeed_blocker(2, mixed_precision='no')}")
@pytest.mark.parametrize("config", ["deepspeed-zero2.yaml", "deepspeed-zero3.yaml"])
def test_two_processes_match_one(config: str, short_reference_run, tmp_path: Path) -> None:
    path = short_reference_run.recipe_file(tmp_path, "double", **{"train.save_steps": SHORT_STEPS})  # one, at the end
    run_ok(accelerate_command(*train_command(path), config=_two_process_copy(config, tmp_path)))
    assert_same_losses(short_reference_run.losses(), losses(tmp_path / "double"))
    # whole adapter: the one-process run's tensor names and shapes (ZeRO-3 gathers on save; none is empty)
    whole = _tensors(short_reference_run.run / "adapter")
    assert _tensors(tmp_path / "double" / "adapter") == whole
    # one optimizer partition per rank, about half of the trainable elements each (alignment padding aside)
    trainable = sum(int(torch.tensor(shape).prod()) for shape in whole.values())
    checkpoint = tmp_path / "double" / "checkpoints" / f"checkpoint-{SHORT_STEPS}"
    assert not (checkpoint / "optimizer.pt").exists()  # the plain (DDP) Trainer's optimizer file
    parts = partition_elements(checkpoint)
    assert sorted(parts) == [0, 1]
    for held in parts.values():
        assert trainable // 2 <= held <= trainable // 2 + 64, (held, trainable)
