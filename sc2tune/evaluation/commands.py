"""The ``sc2tune eval`` commands: typed functions that read arguments, run an evaluation, print and write.

* ``eval code``: :func:`eval_code_command` (execution-based pass@k, optional FIM problems,
  optional generation of the samples first);
* ``eval RECIPE_OR_RUN``: :func:`eval_run_command` (held-out loss/perplexity, FIM infilling,
  classification metrics, several models side by side).

With ``json_output`` the last stdout line is one JSON object with the scores.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sc2tune.errors import UserError
from sc2tune.evaluation.problems import (
    FimMode,
    load_problems,
    load_samples,
    make_fim_problems,
    write_problems,
)
from sc2tune.evaluation.sandbox import SandboxLimits

log = logging.getLogger(__name__)


def parse_ks(text: str) -> list[int]:
    """``"1,10,100"`` -> ``[1, 10, 100]``; a clear error for anything else."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--k '{text}' is not a comma-separated list of integers", hint="e.g. --k 1,10") from None
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"--k '{text}' needs positive integers", hint="e.g. --k 1,10")
    return ks


def eval_code_command(
    *,
    problems: str,
    samples: str | None,
    ks: list[int],
    limits: SandboxLimits,
    workers: int = 2,
    fim: FimMode | None = None,
    fim_seed: int = 0,
    write_problems_to: str | None = None,
    model: str | None = None,
    n_samples: int = 1,
    generation: dict | None = None,
    json_output: bool = False,
    out_dir: str | None = None,
) -> int:
    """Score HumanEval-format samples by execution and print pass@k (see :mod:`sc2tune.evaluation.codeeval`).

    ``fim`` turns the problems into FIM problems first (``lines`` or ``span`` holes, seeded);
    ``write_problems_to`` saves the problems used; ``model`` + ``n_samples`` generate the samples first.
    """
    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.report import write_code_report

    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if limits.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {limits.timeout}")
    table = load_problems(problems)
    if fim is not None:
        table = make_fim_problems(table, fim, fim_seed)
    if write_problems_to:
        path = write_problems(table, write_problems_to)
        print(f"wrote {len(table)} problems to {path}")
    if model is not None:
        from sc2tune.evaluation.sampling import generate_samples

        if samples is None:
            raise UserError("--model needs --samples FILE: where the generated samples are written")
        generate_samples(table, model, samples, n_samples=n_samples, show_progress=not json_output,
                         **(generation or {}))
    if samples is None:
        if write_problems_to:
            return 0
        raise UserError("eval code needs --samples FILE (JSONL with task_id, completion)",
                        hint="or --model PATH --samples OUT to generate them first")
    sample_list = load_samples(samples, table)
    result = evaluate_code(table, sample_list, ks=ks, limits=limits, workers=workers,
                           show_progress=not json_output)
    summary = result.summary()
    if out_dir:
        written = write_code_report(result, out_dir, problems=problems, samples=samples)
        summary["out"] = str(written)
    if not json_output:
        for key, value in result.scores.items():
            print(f"{key}: {value:.4f}")
        counts = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
        print(f"{summary['tasks']} tasks, {summary['samples']} samples ({counts}); sandbox {result.isolation}")
        if out_dir:
            print(f"report: {summary['out']}")
    else:
        print(json.dumps(summary))
    return 0


def out_path(out_dir: str | None, default: Path) -> Path:
    """The report folder: ``out_dir`` when given, else ``default``."""
    return Path(out_dir) if out_dir else default


def eval_run_command(target: str, overrides: list[str], *, models: str | None = None,
                     max_examples: int | None = None, infill_examples: int = 20,
                     infill_max_new_tokens: int = 128, json_output: bool = False,
                     out_dir: str | None = None) -> int:
    """Evaluate a run (or a recipe's output_dir): held-out loss, FIM infilling or classification, one
    column per model; the report goes to ``out_dir`` (default ``RUN/eval``)."""
    from sc2tune.evaluation.report import write_run_report
    from sc2tune.evaluation.runeval import evaluate_run, parse_models, resolve_run

    if max_examples is not None and max_examples < 1:
        raise UserError(f"--max-examples must be at least 1, got {max_examples}")
    run = resolve_run(target, overrides)
    names = parse_models(models, run)
    if infill_max_new_tokens < 1 or infill_examples < 0:
        raise UserError("--infill-max-new-tokens must be >= 1 and --infill-examples >= 0")
    result = evaluate_run(run, names, max_examples=max_examples, infill_examples=infill_examples,
                          infill_max_new_tokens=infill_max_new_tokens, show_progress=not json_output)
    written = write_run_report(result.to_dict(), out_path(out_dir, run.run_dir / "eval"),
                               metrics_file=run.run_dir / "metrics.jsonl")
    summary = result.summary()
    summary["out"] = str(written)
    if json_output:
        print(json.dumps(summary))
        return 0
    keys = sorted({k for row in summary["models"].values() for k in row})
    print(f"{'metric':32s}" + "".join(f"{n:>14s}" for n in summary["models"]))
    for key in keys:
        cells = [summary["models"][n].get(key) for n in summary["models"]]
        print(f"{key:32s}" + "".join(f"{c:>14.4f}" if isinstance(c, float) else f"{c!s:>14s}" for c in cells))
    print(f"report: {written}")
    return 0
