"""The two evaluations as typed API functions: their parameters are the options of ``sc2tune eval RUN`` and
``sc2tune eval code``.

* :func:`eval_run`: a run (or a recipe's ``output_dir``) scored side by side per model on its held-out data
  (:func:`sc2tune.evaluation.runeval.evaluate_run`); the report goes to ``out`` (default ``RUN/eval``).
* :func:`eval_code`: optional FIM problems (``lines`` or ``span`` holes, seeded), optional generation of the
  samples first (``model``), then pass@k in the sandbox (:func:`sc2tune.evaluation.codeeval.evaluate_code`);
  ``model`` without ``samples`` compares the models of a run (base against adapter, ...) on the same problems,
  one column per model (:mod:`sc2tune.evaluation.compare`).

Light to import (the command line reads these signatures); the heavy parts are imported when they run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from sc2tune.clihelp import Help, TrustRemoteCode
from sc2tune.errors import UserError
from sc2tune.evaluation.sandbox import SandboxLimits

if TYPE_CHECKING:
    from sc2tune.evaluation.codeeval import CodeEvalResult
    from sc2tune.evaluation.compare import ModelComparison
    from sc2tune.evaluation.runeval import RunEvalResult

Out = Annotated[str | Path | None, Help("write results.json, report.md and PNG plots here", metavar="DIR")]


@dataclass(frozen=True)
class RunEvaluation:
    """What :func:`eval_run` scored and the report folder it wrote."""

    result: RunEvalResult
    report: Path


@dataclass(frozen=True)
class CodeEvaluation:
    """What :func:`eval_code` did: the problems file written (with their count), the scores and the report
    (None where not asked: only ``write_problems``, no ``out``); with several models (``model`` without
    ``samples``) ``comparison`` holds them all and ``result`` is the primary model's (the trained one)."""

    problems_written: tuple[Path, int] | None
    result: CodeEvalResult | None
    report: Path | None
    comparison: ModelComparison | None = None


def eval_run(
    target: Annotated[str | Path, Help(
        "a run folder (OUTPUT with adapter/recipe.yaml), or a recipe YAML (its output_dir is evaluated); "
        "`sc2tune eval code` scores samples by execution", metavar="RECIPE_OR_RUN", positional=True)],
    overrides: Annotated[list[str] | None, Help("recipe overrides", metavar="KEY.SUB=VALUE", positional=True)] = None,
    *,
    trust_remote_code: TrustRemoteCode = False,
    models: Annotated[str | None, Help(
        "comma list of base,adapter,merged (default: adapter and base, plus merged when OUTPUT/merged exists)")
    ] = None,
    max_examples: Annotated[int | None, Help("cap the held-out examples scored", min=1)] = None,
    infill_examples: Annotated[int, Help(
        "held-out documents per FIM probe kind (random span, whole lines)", min=0)] = 20,
    infill_max_new_tokens: Annotated[int, Help("generation cap per infill", min=1)] = 128,
    out: Out = None,
    show_progress: bool = True,
) -> RunEvaluation:
    """Score the run's models on its held-out data and write the report (``out``, default ``RUN/eval``)."""
    from sc2tune.evaluation.report import write_run_report
    from sc2tune.evaluation.runeval import evaluate_run, parse_models, resolve_run
    from sc2tune.runs import RunFolder

    run = resolve_run(target, overrides or [], trust_remote_code=trust_remote_code)
    result = evaluate_run(run, parse_models(models, run), max_examples=max_examples, infill_examples=infill_examples,
                          infill_max_new_tokens=infill_max_new_tokens, show_progress=show_progress)
    folder = RunFolder(run.run_dir or run.path)
    written = write_run_report(result.to_dict(), Path(out) if out else folder.eval_report, metrics_file=folder.metrics)
    return RunEvaluation(result, written)


def parse_ks(text: str) -> list[int]:
    """``"1,10,100"`` -> ``[1, 10, 100]``; a clear error for anything else."""
    try:
        ks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--k '{text}' is not a comma-separated list of integers", hint="e.g. --k 1,10") from None
    if not ks or any(k < 1 for k in ks):
        raise UserError(f"--k '{text}' needs positive integers", hint="e.g. --k 1,10")
    return ks


def eval_code(
    *,
    problems: Annotated[str, Help(
        "HumanEval-format problems JSONL(.gz), or a shipped benchmark: humaneval, "
        "humaneval-infilling-single-line|-multi-line|-random-span|-random-span-light")] = "humaneval",
    samples: Annotated[str | None, Help(
        "samples JSONL (task_id, completion); the output file with --model (one model); without it --model RUN "
        "compares the run's models, their samples written to --out")] = None,
    k: Annotated[str, Help("comma list of k for pass@k (k above n is left out)")] = "1,10,100",
    timeout: Annotated[float, Help("wall seconds per sample")] = SandboxLimits.timeout,
    memory_mb: Annotated[int, Help("address-space limit per sample process")] = SandboxLimits.memory_mb,
    max_processes: Annotated[int, Help("process/thread limit per sample")] = SandboxLimits.max_processes,
    max_output_mb: Annotated[float | None, Help(
        "fail a sample that prints more than this many MiB (default: no limit)")] = None,
    max_int_digits: Annotated[int | None, Help(
        "int<->str digit limit in a sample, >= 640 (default: no limit)")] = None,
    workers: Annotated[int, Help("samples executed at once", min=1)] = 2,
    python: Annotated[str | None, Help("interpreter that runs the samples (default: see docs)")] = None,
    fim: Annotated[Literal["lines", "span"] | None, Help(
        "turn the problems into FIM problems: mask whole lines or a random span of the canonical solution; "
        "samples are then the infills")] = None,
    seed: Annotated[int, Help("seed of the FIM holes and of sampling")] = 0,
    write_problems: Annotated[str | None, Help("write the (FIM) problems used to FILE", metavar="FILE")] = None,
    model: Annotated[str | None, Help(
        "generate the samples first with this model/adapter/run folder (prompts as the run trained: FIM in its "
        "layout, an instruct run's template)")] = None,
    models: Annotated[str | None, Help(
        "with --model RUN and no --samples: comma list of base, adapter (LoRA/QLoRA run), trained (full "
        "fine-tune), merged (default: base and the run's trained model)")] = None,
    limit: Annotated[int | None, Help("score only the first N problems", min=1)] = None,
    batch_size: Annotated[int, Help("prompts generated at once (--model)", min=1)] = 16,
    n_samples: Annotated[int, Help("samples per task to generate (--model)", min=1)] = 1,
    max_new_tokens: Annotated[int, Help("generation length (--model)")] = 384,
    temperature: Annotated[float, Help("0 = greedy (--model)")] = 0.2,
    top_p: Annotated[float, Help("nucleus sampling (--model)")] = 0.95,
    out: Out = None,
    trust_remote_code: TrustRemoteCode = False,
    show_progress: bool = True,
) -> CodeEvaluation:
    """HumanEval-format samples scored by execution (pass@k): FIM problems made first (``fim``), samples
    generated first (``model``), the report written to ``out``."""
    from sc2tune.evaluation import problems as tables
    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.report import write_code_report

    if timeout <= 0:
        raise UserError(f"--timeout must be positive, got {timeout}")
    if max_output_mb is not None and not max_output_mb > 0:
        raise UserError(f"--max-output-mb must be positive, got {max_output_mb}", hint="leave it out for no limit")
    if max_int_digits is not None and max_int_digits < 640:
        raise UserError(f"--max-int-digits must be at least 640 (Python's floor), got {max_int_digits}",
                        hint="leave it out for no limit")
    limits = SandboxLimits(timeout=timeout, memory_mb=memory_mb, max_processes=max_processes, python=python,
                           max_output_mb=max_output_mb, max_int_digits=max_int_digits)
    ks = parse_ks(k)
    table = tables.load_problems(problems)
    if fim is not None:
        table = tables.make_fim_problems(table, fim, seed)
    if limit is not None:
        table = dict(list(table.items())[:limit])
    if models is not None and (model is None or samples is not None):
        raise UserError("--models compares the models of --model RUN; it takes no --samples FILE",
                        hint="e.g. --model runs/quickstart --models base,trained --out DIR")
    if model is not None and samples is None and out is None:
        raise UserError("--model without --samples compares the run's models: give --out DIR for the report and "
                        "each model's samples", hint="or --samples FILE to generate with one model")
    written = (tables.write_problems(table, write_problems), len(table)) if write_problems else None
    if model is not None:
        from sc2tune.generation import Sampling

        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        if samples is None:  # every model of the run on the table, the report and their samples in out
            from sc2tune.evaluation.compare import compare_models
            from sc2tune.evaluation.report import write_comparison_report

            assert out is not None  # checked above
            comparison = compare_models(model, table, problems_name=problems, models=models, n_samples=n_samples,
                                        sampling=sampling, batch_size=batch_size, ks=tuple(ks), limits=limits,
                                        workers=workers, trust_remote_code=trust_remote_code,
                                        show_progress=show_progress)
            report = write_comparison_report(comparison, out)
            return CodeEvaluation(written, comparison.models[comparison.primary].result, report, comparison)
        from sc2tune.evaluation.sampling import generate_samples

        generate_samples(table, model, samples, n_samples=n_samples, sampling=sampling, show_progress=show_progress,
                         trust_remote_code=trust_remote_code, batch_size=batch_size)
    if samples is None:
        if written:
            return CodeEvaluation(written, None, None)
        raise UserError("eval code needs --samples FILE (JSONL with task_id, completion)",
                        hint="or --model PATH --samples OUT to generate them first")
    loaded = tables.load_samples(samples, table if limit is None else tables.load_problems(problems))
    if limit is not None:  # samples of the problems past --limit are left out
        loaded = [s for s in loaded if s.task_id in table]
    result = evaluate_code(table, loaded, ks=ks, limits=limits, workers=workers,
                           show_progress=show_progress)
    report = write_code_report(result, out, problems=problems, samples=samples) if out else None
    return CodeEvaluation(written, result, report)

