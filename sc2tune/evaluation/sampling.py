"""Generate HumanEval-format samples with a model, through :mod:`sc2tune.generation`.

For each problem, ``n_samples`` completions are drawn (sample ``i`` of a task is seeded with
``seed + i``, so a rerun reproduces the file):

* left-to-right problems: ``generate(prompt)``, cut at the first of the usual HumanEval stop strings
  (a new top-level ``def``/``class``/``if``/``print``/comment/decorator or a code fence), as in the
  Codex and BigCode evaluation harnesses;
* FIM problems (with a ``suffix``): ``infill(prompt, suffix)``, which stops at ``<|endoftext|>``.

The samples file is written atomically (temp file + rename) as JSONL ``{task_id, completion}``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sc2tune.errors import UserError
from sc2tune.evaluation.problems import Problem

log = logging.getLogger(__name__)

#: Stop strings for left-to-right HumanEval completions.
STOP_STRINGS = ("\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n@", "\n```")


def generate_samples(problems: dict[str, Problem], model: str, out_file: str | Path, *, n_samples: int = 1,
                     max_new_tokens: int = 384, temperature: float = 0.2, top_p: float = 0.95,
                     seed: int = 0, show_progress: bool = True) -> Path:
    """Write ``n_samples`` completions per problem to ``out_file`` (JSONL) and return its path."""
    from sc2tune.generation import Sampling, generate, infill, load_for_inference

    if n_samples < 1:
        raise UserError(f"--n-samples must be at least 1, got {n_samples}")
    if n_samples > 1 and temperature == 0:
        log.warning("--temperature 0 is greedy: all %d samples of a task will be identical", n_samples)
    lm = load_for_inference(model)
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    columns = (TextColumn("generating samples"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with open(tmp, "w", encoding="utf-8") as f, \
                Progress(*columns, disable=not show_progress, transient=True) as progress:
            bar = progress.add_task("generate", total=len(problems) * n_samples)
            for problem in problems.values():
                for i in range(n_samples):
                    if problem.suffix:
                        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                            seed=seed + i)
                        completion = infill(lm, problem.prompt, problem.suffix, sampling)
                    else:
                        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                            stop=STOP_STRINGS, seed=seed + i)
                        completion = generate(lm, problem.prompt, sampling)
                    f.write(json.dumps({"task_id": problem.task_id, "completion": completion}) + "\n")
                    progress.advance(bar)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
