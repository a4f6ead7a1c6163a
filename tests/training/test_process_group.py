"""``sc2tune.train`` ends the process group it initialised under a launcher, at the end of a run and on an
error; a group its caller initialised is left alone.

The launch is torchrun's environment for a one-process job (``LOCAL_RANK``, ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``/``MASTER_PORT``), in this process: accelerate then starts a real gloo group (MULTI_CPU), as it
does in each process of ``torchrun -m sc2tune train``. Reference: ``torch.distributed.is_initialized()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from launching import fim_recipe, free_port

from sc2tune.errors import UserError
from sc2tune.recipe import recipe_from_dict
from sc2tune.training import train


@pytest.fixture
def one_process_launch(monkeypatch: pytest.MonkeyPatch):
    """torchrun's variables for world size 1 and a fresh accelerate state; afterwards no group and a fresh
    state again (accelerate keeps its state in class-level dicts that outlive a test). Yields the list of
    groups started since (``torch.distributed.init_process_group`` calls, one entry each)."""
    from accelerate.state import AcceleratorState, GradientState

    def reset() -> None:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    assert not dist.is_initialized()
    reset()
    for name, value in {"LOCAL_RANK": "0", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                        "OMP_NUM_THREADS": str(torch.get_num_threads())}.items():
        monkeypatch.setenv(name, value)  # accelerate rewrites some of these: setenv restores them all
    started: list[int] = []
    real_init = dist.init_process_group

    def counted_init(*args, **kwargs):
        started.append(1)
        return real_init(*args, **kwargs)

    monkeypatch.setattr(dist, "init_process_group", counted_init)  # accelerate looks it up at call time
    yield started
    if dist.is_initialized():
        dist.destroy_process_group()
    reset()


def _no_rows_recipe(tmp_path: Path) -> dict:
    (tmp_path / "empty").mkdir()
    return fim_recipe(tmp_path, "failed", batch_size=2, **{"data.train": str(tmp_path / "empty")})


@pytest.mark.slow
def test_the_group_is_ended_after_an_error_and_after_a_run(one_process_launch: list[int], tmp_path: Path):
    with pytest.raises(UserError):
        train(recipe_from_dict(_no_rows_recipe(tmp_path)), show_progress=False)  # fails after the group is up
    assert len(one_process_launch) == 1  # the run started a group ...
    assert not dist.is_initialized()  # ... and ended it

    recipe = fim_recipe(tmp_path, "run", batch_size=2, **{"train.max_steps": 1, "train.save_steps": 100})
    result = train(recipe_from_dict(recipe), show_progress=False)  # a second run in the process: a new group
    assert result.global_step == 1 and (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert len(one_process_launch) == 2
    assert not dist.is_initialized()


def test_a_group_the_caller_initialised_is_left_alone(one_process_launch: list[int], tmp_path: Path):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    with pytest.raises(UserError):
        train(recipe_from_dict(_no_rows_recipe(tmp_path)), show_progress=False)
    assert len(one_process_launch) == 1  # only the caller's
    assert dist.is_initialized()
