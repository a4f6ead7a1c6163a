"""``sc2tune eval RECIPE_OR_RUN`` and ``sc2tune eval code``: two commands behind one name, with the options of
:func:`sc2tune.evaluation.api.eval_run` and :func:`sc2tune.evaluation.api.eval_code`.

With ``--json`` the last stdout line is one JSON object with the scores (and no progress bars are drawn).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sc2tune.commands.derive import Command
from sc2tune.commands.options import JsonOutput

if TYPE_CHECKING:
    from sc2tune.evaluation.api import CodeEvaluation, RunEvaluation


def _printed_json(summary: dict, report: object, as_json: bool) -> bool:
    """Add the report folder to ``summary`` (key ``out``); with ``--json`` print it as one line and say so."""
    summary["out"] = str(report)
    if as_json:
        print(json.dumps(summary))
    return as_json


def show_run(evaluation: RunEvaluation, as_json: JsonOutput = False) -> None:
    """Evaluate a run: sc2tune eval RUN_OR_RECIPE [--models base,adapter,merged] (sc2tune eval code --problems F
    --samples F [--k 1,10]: execution-based pass@k)."""
    summary = evaluation.result.summary()
    if _printed_json(summary, evaluation.report, as_json):
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
    print(f"report: {evaluation.report}")


def show_code(evaluation: CodeEvaluation, as_json: JsonOutput = False) -> None:
    """Score HumanEval-format samples by execution (pass@k) in the sandbox: sc2tune eval code --problems F
    --samples F [--k 1,10] [--model PATH]; base against the fine-tuned model, one column each: sc2tune eval code
    --problems humaneval-infilling-single-line --model RUN [--models base,adapter] [--limit N] --out DIR."""
    if evaluation.problems_written:
        path, count = evaluation.problems_written
        print(f"wrote {count} problems to {path}")
    result = evaluation.result
    if result is None:
        return
    if evaluation.comparison is not None:
        _show_comparison(evaluation, as_json)
        return
    summary = result.summary()
    if evaluation.report:
        summary["out"] = str(evaluation.report)
    if as_json:
        print(json.dumps(summary))
        return
    for key, value in result.scores.items():
        lo, hi = result.ci95[key]
        print(f"{key}: {value:.4f}  (95% interval {lo:.4f} to {hi:.4f}, bootstrap over tasks)")
    counts = ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items())
    print(f"{summary['tasks']} tasks, {summary['samples']} samples ({counts}); sandbox {result.isolation}")
    if evaluation.report:
        print(f"report: {evaluation.report}")


def _show_comparison(evaluation: CodeEvaluation, as_json: bool) -> None:
    """One column per model, each score with its 95% interval below it, then the paired differences."""
    assert evaluation.comparison is not None
    summary = evaluation.comparison.summary()
    if _printed_json(summary, evaluation.report, as_json):
        return
    rows = summary["models"]
    first = next(iter(rows.values()))
    keys = [k for k in first if k.startswith("pass@")] + [k for k in ("exact_match", "edit_similarity") if k in first]
    print(f"{'metric':24s}" + "".join(f"{n:>22s}" for n in rows))
    for key in keys:
        print(f"{key:24s}" + "".join(f"{rows[n][key]:>22.4f}" for n in rows))
        print(f"{'  95% interval':24s}" + "".join(f"{_span(rows[n]['ci95'].get(key)):>22s}" for n in rows))
    for pair, metrics in summary.get("differences", {}).items():
        for key, diff in metrics.items():
            print(f"{pair}: {key} {diff['value']:+.4f} (95% interval {_span(diff['ci95'])}, paired bootstrap)")
    print(f"{first['tasks']} tasks; sandbox {evaluation.comparison.models[summary['model']].result.isolation}")
    print(f"report: {evaluation.report}")


def _span(bounds: list[float] | None) -> str:
    return f"{bounds[0]:.3f} to {bounds[1]:.3f}" if bounds else ""


def _no_bars(shown: dict[str, Any]) -> dict[str, Any]:
    return {"show_progress": not shown["as_json"]}


evaluate = Command(show_run, api="sc2tune.evaluation.api:eval_run", pass_on=_no_bars,
                   routes={"code": Command(show_code, api="sc2tune.evaluation.api:eval_code", pass_on=_no_bars)})
