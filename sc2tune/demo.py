"""``sc2tune quickstart``: the whole path on the built-in tiny model, in a few CPU minutes.

1. train the FIM quickstart recipe (LoRA on ``sc2tune/tiny-starcoder2``, the bundled sample repositories);
2. merge the adapter into full weights (streamed, verified against the adapter);
3. infill a line of one of the sample files with the merged model, loaded as a plain transformers folder.

Everything goes to a fresh ``runs/quickstart[-N]`` folder; nothing existing is touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from sc2tune.clihelp import Help
from sc2tune.errors import UserError

log = logging.getLogger(__name__)

PACKAGE = Path(__file__).resolve().parent

#: Training settings that make the tiny model learn the sample code visibly within a few minutes.
QUICKSTART_OVERRIDES = ["train.max_steps=120", "train.lr=5e-3", "train.eval_steps=60", "train.save_steps=60"]


@dataclass(frozen=True)
class QuickstartResult:
    """Folders written and the sample infill."""

    run_dir: Path
    adapter_dir: Path
    merged_dir: Path
    prefix: str
    suffix: str
    expected_middle: str
    infill: str
    eval_loss_before: float | None
    eval_loss_after: float | None


def _first_existing(*candidates: Path) -> Path:
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise UserError(f"sc2tune's bundled files are missing (looked for {candidates[0].name})",
                    hint="reinstall sc2tune (pip install -e . from a checkout)")


def bundled_recipe() -> Path:
    """The FIM quickstart recipe: the checkout's copy, else the installed one."""
    return _first_existing(PACKAGE.parent / "recipes" / "quickstart" / "fim.yaml",
                           PACKAGE / "_recipes" / "quickstart" / "fim.yaml")


def bundled_code() -> Path:
    """The sample repositories the quickstart trains on."""
    return _first_existing(PACKAGE.parent / "data_templates" / "samples" / "code",
                           PACKAGE / "_data_templates" / "samples" / "code")


def fresh_run_dir(root: Path) -> Path:
    """``root/quickstart``, or ``quickstart-2``, ``-3``... whichever does not exist yet."""
    candidate, n = root / "quickstart", 1
    while candidate.exists():
        n += 1
        candidate = root / f"quickstart-{n}"
    return candidate


def sample_cut(code_dir: Path) -> tuple[str, str, str]:
    """Prefix, suffix and the held-back middle: one non-empty line from the middle of a sample file."""
    path = sorted(code_dir.rglob("*.py"), key=lambda p: (-p.stat().st_size, str(p)))[0]
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    candidates = [i for i, line in enumerate(lines) if line.strip() and i > 2]
    cut = candidates[len(candidates) // 2]
    return "".join(lines[:cut]), "".join(lines[cut + 1:]), lines[cut]


def quickstart(
    runs_root: Annotated[str | Path, Help("folder for the quickstart run (a fresh sub-folder is made)",
                                          flag="--runs")] = "runs",
    *,
    show_progress: Annotated[bool, Help("no progress bars", flag="--no-progress")] = True,
) -> QuickstartResult:
    """Train, merge and infill on the built-in tiny model (see module doc)."""
    from sc2tune.generation import Sampling, infill, load_for_inference
    from sc2tune.merging import merge
    from sc2tune.recipe import load_recipe
    from sc2tune.reporting import read_metrics
    from sc2tune.runs import RunFolder
    from sc2tune.training import train

    run_dir = fresh_run_dir(Path(runs_root))
    code = bundled_code()
    recipe = load_recipe(bundled_recipe(), [*QUICKSTART_OVERRIDES, f"output_dir={run_dir}", f"data.train={code}"])
    log.info("quickstart: training %s -> %s", recipe.model.name_or_path, run_dir)
    result = train(recipe, show_progress=show_progress)
    assert result.adapter_dir is not None
    merged_dir = RunFolder(run_dir).merged
    merge(result.adapter_dir, merged_dir, progress=show_progress)
    prefix, suffix, middle = sample_cut(code)
    model = load_for_inference(merged_dir)
    text = infill(model, prefix, suffix, Sampling(max_new_tokens=48, temperature=0.0))
    _, evals = read_metrics(RunFolder(run_dir).metrics)
    return QuickstartResult(run_dir, result.adapter_dir, merged_dir, prefix, suffix, middle, text,
                            evals[0][1] if evals else None, evals[-1][1] if evals else None)
