"""``sc2tune eval``: a run (or a recipe's ``output_dir``) scored side by side per model, or ``eval code``:
HumanEval-format samples scored by execution (pass@k) in the sandbox.

* ``eval RECIPE_OR_RUN``: held-out loss/perplexity, FIM infilling or classification metrics, one column per
  model (:func:`sc2tune.evaluation.runeval.evaluate_run`); the report goes to ``--out`` (default ``RUN/eval``).
* ``eval code``: optional FIM problems (``lines`` or ``span`` holes, seeded), optional generation of the
  samples first (``--model``), then pass@k (:func:`sc2tune.evaluation.codeeval.evaluate_code`).

With ``--json`` the last stdout line is one JSON object with the scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from sc2tune.commands.options import JsonOutput, TrustRemoteCode
from sc2tune.errors import UserError

if TYPE_CHECKING:
    from sc2tune.evaluation.sandbox import SandboxLimits
    from sc2tune.generation import Sampling

RUN_PANEL = "RECIPE_OR_RUN"
CODE_PANEL = "code"


def evaluate(
    target: Annotated[str, typer.Argument(
        metavar="RECIPE_OR_RUN|code", show_default=False,
        help="a run folder (OUTPUT with adapter/recipe.yaml), a recipe YAML (its output_dir is evaluated), "
        "or the word 'code' for execution-based pass@k")],
    overrides: Annotated[list[str] | None, typer.Argument(
        metavar="KEY.SUB=VALUE", show_default=False, help="recipe overrides (RECIPE only)")] = None,
    trust_remote_code: TrustRemoteCode = False,
    as_json: JsonOutput = False,
    out: Annotated[str | None, typer.Option(metavar="DIR", help="write results.json, report.md and PNG plots here")
                   ] = None,
    models: Annotated[str | None, typer.Option(
        rich_help_panel=RUN_PANEL,
        help="comma list of base,adapter,merged (default: adapter and base, plus merged when OUTPUT/merged exists)")
    ] = None,
    max_examples: Annotated[int | None, typer.Option(
        min=1, rich_help_panel=RUN_PANEL, help="cap the held-out examples scored")] = None,
    infill_examples: Annotated[int, typer.Option(
        min=0, rich_help_panel=RUN_PANEL, help="held-out documents per FIM probe kind (random span, whole lines)")
    ] = 20,
    infill_max_new_tokens: Annotated[int, typer.Option(
        min=1, rich_help_panel=RUN_PANEL, help="generation cap per infill")] = 128,
    problems: Annotated[str, typer.Option(
        rich_help_panel=CODE_PANEL,
        help="HumanEval-format problems JSONL(.gz), or a shipped benchmark: humaneval, "
        "humaneval-infilling-single-line|-multi-line|-random-span|-random-span-light")] = "humaneval",
    samples: Annotated[str | None, typer.Option(
        rich_help_panel=CODE_PANEL, help="samples JSONL (task_id, completion); the output file with --model")
    ] = None,
    k: Annotated[str, typer.Option(
        rich_help_panel=CODE_PANEL, help="comma list of k for pass@k (k above n is left out)")] = "1,10,100",
    timeout: Annotated[float, typer.Option(rich_help_panel=CODE_PANEL, help="wall seconds per sample")] = 10.0,
    memory_mb: Annotated[int, typer.Option(
        rich_help_panel=CODE_PANEL, help="address-space limit per sample process")] = 1024,
    max_processes: Annotated[int, typer.Option(
        rich_help_panel=CODE_PANEL, help="process/thread limit per sample")] = 32,
    max_output_mb: Annotated[float | None, typer.Option(
        rich_help_panel=CODE_PANEL, help="fail a sample that prints more than this many MiB (default: no limit)")
    ] = None,
    max_int_digits: Annotated[int | None, typer.Option(
        rich_help_panel=CODE_PANEL, help="int<->str digit limit in a sample, >= 640 (default: no limit)")] = None,
    workers: Annotated[int, typer.Option(min=1, rich_help_panel=CODE_PANEL, help="samples executed at once")] = 2,
    python: Annotated[str | None, typer.Option(
        rich_help_panel=CODE_PANEL, help="interpreter that runs the samples (default: see docs)")] = None,
    fim: Annotated[Literal["lines", "span"] | None, typer.Option(
        rich_help_panel=CODE_PANEL,
        help="turn the problems into FIM problems: mask whole lines or a random span of the canonical solution; "
        "samples are then the infills")] = None,
    seed: Annotated[int, typer.Option(rich_help_panel=CODE_PANEL, help="seed of the FIM holes and of sampling")] = 0,
    write_problems: Annotated[str | None, typer.Option(
        metavar="FILE", rich_help_panel=CODE_PANEL, help="write the (FIM) problems used to FILE")] = None,
    model: Annotated[str | None, typer.Option(
        rich_help_panel=CODE_PANEL, help="generate the samples first with this model/adapter/run folder")] = None,
    n_samples: Annotated[int, typer.Option(
        min=1, rich_help_panel=CODE_PANEL, help="samples per task to generate (--model)")] = 1,
    max_new_tokens: Annotated[int, typer.Option(
        rich_help_panel=CODE_PANEL, help="generation length (--model)")] = 384,
    temperature: Annotated[float, typer.Option(rich_help_panel=CODE_PANEL, help="0 = greedy (--model)")] = 0.2,
    top_p: Annotated[float, typer.Option(rich_help_panel=CODE_PANEL, help="nucleus sampling (--model)")] = 0.95,
) -> None:
    """Evaluate: sc2tune eval RUN_OR_RECIPE [--models base,adapter,merged] | sc2tune eval code --problems F
    --samples F [--k 1,10]."""
    if target != "code":
        _eval_run(target, overrides or [], trust_remote_code=trust_remote_code, models=models,
                  max_examples=max_examples, infill_examples=infill_examples,
                  infill_max_new_tokens=infill_max_new_tokens, as_json=as_json, out=out)
        return
    if overrides:
        raise UserError(f"eval code takes no recipe overrides (got {' '.join(overrides)})")
    from sc2tune.evaluation.sandbox import SandboxLimits
    from sc2tune.generation import Sampling

    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout}")
    if max_output_mb is not None and not max_output_mb > 0:
        raise UserError(f"--max-output-mb must be positive, got {max_output_mb}", hint="leave it out for no limit")
    if max_int_digits is not None and max_int_digits < 640:
        raise UserError(f"--max-int-digits must be at least 640 (Python's floor), got {max_int_digits}",
                        hint="leave it out for no limit")
    limits = SandboxLimits(timeout=timeout, memory_mb=memory_mb, max_processes=max_processes, python=python,
                           max_output_mb=max_output_mb, max_int_digits=max_int_digits)
    sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    _eval_code(problems=problems, samples=samples, ks=parse_ks(k), limits=limits, workers=workers, fim=fim,
               fim_seed=seed, write_problems_to=write_problems, model=model, n_samples=n_samples, sampling=sampling,
               as_json=as_json, out=out, trust_remote_code=trust_remote_code)


def parse_ks(text: str) -> list[int]:
    """``"1,10,100"`` -> ``[1, 10, 100]``; a clear error for anything else."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--k '{text}' is not a comma-separated list of integers", hint="e.g. --k 1,10") from None
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"--k '{text}' needs positive integers", hint="e.g. --k 1,10")
    return ks


def _eval_code(*, problems: str, samples: str | None, ks: list[int], limits: SandboxLimits, workers: int,
               fim: str | None, fim_seed: int, write_problems_to: str | None, model: str | None, n_samples: int,
               sampling: Sampling, as_json: bool, out: str | None, trust_remote_code: bool) -> None:
    """FIM problems (optional), samples generated (optional), pass@k scored, printed and reported."""
    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.problems import load_problems, load_samples, make_fim_problems, write_problems
    from sc2tune.evaluation.report import write_code_report

    table = load_problems(problems)
    if fim is not None:
        table = make_fim_problems(table, fim, fim_seed)  # type: ignore[arg-type]
    if write_problems_to:
        print(f"wrote {len(table)} problems to {write_problems(table, write_problems_to)}")
    if model is not None:
        from sc2tune.evaluation.sampling import generate_samples

        if samples is None:
            raise UserError("--model needs --samples FILE: where the generated samples are written")
        generate_samples(table, model, samples, n_samples=n_samples, sampling=sampling, show_progress=not as_json,
                         trust_remote_code=trust_remote_code)
    if samples is None:
        if write_problems_to:
            return
        raise UserError("eval code needs --samples FILE (JSONL with task_id, completion)",
                        hint="or --model PATH --samples OUT to generate them first")
    result = evaluate_code(table, load_samples(samples, table), ks=ks, limits=limits, workers=workers,
                           show_progress=not as_json)
    summary = result.summary()
    if out:
        summary["out"] = str(write_code_report(result, out, problems=problems, samples=samples))
    if as_json:
        print(json.dumps(summary))
        return
    for key, value in result.scores.items():
        lo, hi = result.ci95[key]
        print(f"{key}: {value:.4f}  (95% interval {lo:.4f} to {hi:.4f}, bootstrap over tasks)")
    counts = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
    print(f"{summary['tasks']} tasks, {summary['samples']} samples ({counts}); sandbox {result.isolation}")
    if out:
        print(f"report: {summary['out']}")


def _eval_run(target: str, overrides: list[str], *, trust_remote_code: bool, models: str | None,
              max_examples: int | None, infill_examples: int, infill_max_new_tokens: int, as_json: bool,
              out: str | None) -> None:
    """Score the run's models on its held-out data, write the report, print one column per model."""
    from sc2tune.evaluation.report import write_run_report
    from sc2tune.evaluation.runeval import evaluate_run, parse_models, resolve_run
    from sc2tune.runs import RunFolder

    run = resolve_run(target, overrides, trust_remote_code=trust_remote_code)
    result = evaluate_run(run, parse_models(models, run), max_examples=max_examples, infill_examples=infill_examples,
                          infill_max_new_tokens=infill_max_new_tokens, show_progress=not as_json)
    folder = RunFolder(run.run_dir)
    written = write_run_report(result.to_dict(), Path(out) if out else folder.eval_report, metrics_file=folder.metrics)
    summary = result.summary()
    summary["out"] = str(written)
    if as_json:
        print(json.dumps(summary))
        return
    rows = summary["models"]
    keys = sorted({key for row in rows.values() for key in row} - {"ci95"})
    print(f"{'metric':32s}" + "".join(f"{n:>18s}" for n in rows))
    for key in keys:
        cells = [rows[n].get(key) for n in rows]
        print(f"{key:32s}" + "".join(f"{c:>18.4f}" if isinstance(c, float) else f"{c!s:>18s}" for c in cells))
        bounds = [rows[n].get("ci95", {}).get(key) for n in rows]
        if any(bounds):
            print(f"{'  95% interval':32s}" + "".join(f"{_span(b):>18s}" for b in bounds))
    for pair, metrics in summary.get("differences", {}).items():
        for key, diff in metrics.items():
            print(f"{pair}: {key} {diff['value']:+.4f} (95% interval {_span(diff['ci95'])}, paired bootstrap)")
    print(f"report: {written}")


def _span(bounds: list[float] | None) -> str:
    return f"{bounds[0]:.3f} to {bounds[1]:.3f}" if bounds else ""
