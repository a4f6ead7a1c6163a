"""Generate HumanEval-format samples with a model, through :mod:`sc2tune.generation`.

For each problem, ``n_samples`` completions are drawn with the given :class:`~sc2tune.generation.Sampling`
(sample ``i`` of a task is seeded with ``sampling.seed + i``, seed 0 when None, so a rerun reproduces the file):

* left-to-right problems: ``generate(prompt)``, cut at the first of the usual HumanEval stop strings
  (a new top-level ``def``/``class``/``if``/``print``/comment/decorator or a code fence), as in the
  Codex and BigCode evaluation harnesses;
* FIM problems (with a ``suffix``): ``infill(prompt, suffix)``, which stops at ``<|endoftext|>``.

The samples file is written atomically (temp file + rename) as JSONL ``{task_id, completion}``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sc2tune.atomic import staged_file
from sc2tune.errors import UserError
from sc2tune.evaluation.problems import Problem

if TYPE_CHECKING:
    from sc2tune.generation import Sampling

log = logging.getLogger(__name__)

#: Stop strings for left-to-right HumanEval completions.
STOP_STRINGS = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n@", "\n```")


def generate_samples(problems: dict[str, Problem], model: str, out_file: str | Path, *, n_samples: int = 1,
                     sampling: Sampling | None = None, show_progress: bool = True,
                     trust_remote_code: bool = False) -> Path:
    """Write ``n_samples`` completions per problem to ``out_file`` (JSONL) and return its path.

    ``sampling`` defaults to 384 new tokens at temperature 0.2, top-p 0.95, seed 0; its ``stop`` strings are
    added to :data:`STOP_STRINGS` for left-to-right problems."""
    from sc2tune.generation import Sampling, generate, infill, load_for_inference

    sampling = sampling or Sampling(max_new_tokens=384, seed=0)
    if n_samples < 1:
        raise UserError(f"--n-samples must be at least 1, got {n_samples}")
    if n_samples > 1 and sampling.temperature == 0:
        log.warning("--temperature 0 is greedy: all %d samples of a task will be identical", n_samples)
    seed = sampling.seed or 0
    lm = load_for_inference(model, trust_remote_code=trust_remote_code)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("generating samples"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with staged_file(out) as tmp, open(tmp, "w", encoding="utf-8") as f, \
            Progress(*columns, disable=not show_progress, transient=True) as progress:
        bar = progress.add_task("generate", total=len(problems) * n_samples)
        for problem in problems.values():
            for i in range(n_samples):
                if problem.suffix:
                    completion = infill(lm, problem.prompt, problem.suffix,
                                        dataclasses.replace(sampling, seed=seed + i))
                else:
                    completion = generate(lm, problem.prompt, dataclasses.replace(
                        sampling, stop=(*STOP_STRINGS, *sampling.stop), seed=seed + i))
                f.write(json.dumps({"task_id": problem.task_id, "completion": completion}) + "\n")
                progress.advance(bar)
    return out
