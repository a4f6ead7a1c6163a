"""The one-process reference runs of the distributed tests, each trained once per session.

DDP (two accelerate "nodes", torchrun), FSDP and DeepSpeed ZeRO-2/3 each launch 2 processes x batch 2 of
``launching.fim_recipe`` and compare every step's loss (and the adapter) with one process x batch 4 of the same
recipe. That one-process run is the same for all of them, so it is trained here once (in this process,
``sc2tune.train``) instead of once per test: ``reference_run`` (STEPS steps: the FSDP tests, whose resume test
needs steps to spare) and ``short_reference_run`` (SHORT_STEPS steps: the DDP and DeepSpeed tests, whose launches
need no more). Both train on one code folder, so every launched run finds its prepared data cached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from launching import SHORT_STEPS, STEPS, fim_recipe, losses, write_code, write_recipe


@dataclass(frozen=True)
class Reference:
    """A finished reference run (``run``: a run folder), its number of steps and the code folder it trained on."""

    run: Path
    steps: int
    code: Path

    def losses(self) -> dict[int, float]:
        return losses(self.run)

    def recipe(self, folder: Path, name: str, *, batch_size: int = 2, **changes: object) -> dict:
        """The reference's recipe (``fim_recipe``, same steps and code folder), output in ``folder/name``."""
        return fim_recipe(folder, name, batch_size=batch_size, code=self.code,
                          **{"train.max_steps": self.steps, **changes})

    def recipe_file(self, folder: Path, name: str, *, batch_size: int = 2, **changes: object) -> Path:
        """:meth:`recipe` written to ``folder/name.yaml``, for a launched ``sc2tune train``."""
        return write_recipe(folder / f"{name}.yaml", self.recipe(folder, name, batch_size=batch_size, **changes))


@pytest.fixture(scope="session")
def reference_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_code(tmp_path_factory.mktemp("reference"))


def _reference(code: Path, steps: int) -> Reference:
    from sc2tune.recipe import recipe_from_dict
    from sc2tune.training import train

    folder = code.parent
    train(recipe_from_dict(fim_recipe(folder, f"single-{steps}", batch_size=4, code=code,
                                      **{"train.max_steps": steps})), show_progress=False)
    return Reference(folder / f"single-{steps}", steps, code)


@pytest.fixture(scope="session")
def reference_run(reference_code: Path) -> Reference:
    """One process, batch 4, ``launching.fim_recipe`` with STEPS steps (float32, no dropout, one checkpoint at the
    end): losses, adapter and ``engine/rank-0.json`` that a 2-process launch of the same recipe must reproduce."""
    return _reference(reference_code, STEPS)


@pytest.fixture(scope="session")
def short_reference_run(reference_code: Path) -> Reference:
    """:func:`reference_run` with SHORT_STEPS steps (the learning-rate schedule depends on the number of steps,
    so a shorter launch needs a reference of its own length)."""
    return _reference(reference_code, SHORT_STEPS)
