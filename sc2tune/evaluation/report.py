"""Evaluation reports: ``results.json``, ``report.md`` and PNG plots, written atomically into one folder.

Layout of a report folder::

    results.json          every number (scores, per-task/per-class detail, settings)
    report.md             the same for people, plots linked
    passk.png             pass@k bars (eval code)
    samples.jsonl         one line per executed sample (eval code of one samples file)
    samples-<model>.jsonl the samples each model wrote (eval code --model RUN: one column per model)
    results-<model>.jsonl each of those samples' verdict, completion, exact match and edit similarity
    loss.png              training loss and eval loss against step, from OUTPUT/metrics.jsonl (eval RUN)
    confusion-<model>.png confusion matrix per model (classification)

The folder is built in a hidden sibling folder and renamed into place whole, replacing an older report
(:mod:`sc2tune.atomic`).
Plots use matplotlib's Agg backend (no display needed).

Text that comes from a sample, a problems file or a data set (task ids, failure reasons, which quote the
sample's own error messages, class labels, file names) enters ``report.md`` only through
:func:`md_text`: every line break becomes a space and every ASCII punctuation character is
backslash-escaped (CommonMark's escapes), so a ``|``, a backtick, ``<b>``, ``[link](...)`` or a
``\r`` in it shows as itself and cannot end a table cell, open a code span or inject HTML.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.atomic import staged_dir
from sc2tune.errors import UserError
from sc2tune.evaluation.problems import write_jsonl
from sc2tune.reporting import plot_loss_curves, pyplot, read_metrics
from sc2tune.runs.layout import LOSS_PLOT

if TYPE_CHECKING:
    from sc2tune.evaluation.codeeval import CodeEvalResult
    from sc2tune.evaluation.compare import ModelComparison


@contextlib.contextmanager
def report_dir(out_dir: str | Path) -> Iterator[Path]:
    """A hidden sibling folder to build a report in, published as ``out_dir`` when the block ends, replacing an
    older report (:func:`sc2tune.atomic.staged_dir`: flushed, renamed into place whole; removed if it fails)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    with staged_dir(out, replace=True) as tmp:
        yield tmp


def dump_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")


# ---- plots ------------------------------------------------------------------------------------------

def plot_pass_at_k(scores: Mapping[str, float], path: Path, title: str = "pass@k") -> Path:
    """Bar chart of ``{"pass@1": x, ...}`` (values in [0, 1], labelled on the bars)."""
    plt = pyplot()
    names, values = list(scores), [scores[name] for name in scores]
    fig, ax = plt.subplots(figsize=(max(3.5, 1.3 * len(names) + 1.5), 3.5), dpi=100)
    bars = ax.bar(names, values, color="#3b75af")
    for bar, value in zip(bars, values, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.01, f"{value:.3f}", ha="center", va="bottom")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("score")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path,
                   title: str = "confusion matrix") -> Path:
    """Heat map of ``matrix[true][pred]`` counts with the count written in each cell."""
    plt = pyplot()
    size = max(3.5, 0.6 * len(labels) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    peak = max((max(row) for row in matrix if row), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if peak and count > peak / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---- code evaluation report -------------------------------------------------------------------------

def code_markdown(result: CodeEvalResult, *, problems: str, samples: str) -> str:
    """Markdown report of an execution-based evaluation."""
    lines = ["# sc2tune eval code", "", f"- problems: {md_text(problems, None)}",
             f"- samples: {md_text(samples, None)}",
             f"- sandbox: {result.isolation}", f"- per-sample limits: {_limits_text(result.limits)}", "",
             "| metric | score | 95% interval |", "|---|---|---|"]
    lines += [f"| {name} | {value:.4f} | {_interval(result.ci95.get(name))} |" for name, value in result.scores.items()]
    summary = result.summary()
    lines += ["", f"{summary['tasks']} tasks, {summary['samples']} samples: "
              + ", ".join(f"{k} {v}" for k, v in summary["status_counts"].items()), ""]
    if result.scores:
        lines += ["![pass@k](passk.png)", ""]
    failing = [r for r in result.samples if r.status != "passed"][:20]
    if failing:
        lines += ["## First failures", "", "| task | sample | status | reason |", "|---|---|---|---|"]
        lines += [f"| {md_text(r.task_id)} | {r.completion_id} | {r.status} | {md_text(r.error)} |"
                  for r in failing]
    if result.tasks_without_samples:
        lines += ["", f"{len(result.tasks_without_samples)} problems had no samples and are not scored."]
    return "\n".join(lines) + "\n"


def _differences_section(differences: dict, units: str, method: str) -> list[str]:
    """The "Paired differences" section: one row per (comparison, metric), ``{"value", "ci95"}`` each; none
    without differences."""
    if not differences:
        return []
    return ["", "## Paired differences", "", f"Same {units} for both models; 95% interval of {method} "
            "(an interval that excludes 0 is unlikely to be noise).", "",
            "| comparison | metric | difference | 95% interval |", "|---|---|---|---|",
            *(f"| {md_text(pair)} | {md_text(key)} | {d['value']:+.4f} | {_interval(d['ci95'])} |"
              for pair, metrics in differences.items() for key, d in metrics.items())]


def _interval(bounds: Sequence[float] | None) -> str:
    """``[lo, hi]`` as report text (empty when there is none)."""
    return f"{bounds[0]:.4f} to {bounds[1]:.4f}" if bounds else ""


def _limits_text(limits: Mapping[str, Any]) -> str:
    return (f"{limits['timeout']:g} s wall, {limits['memory_mb']} MiB address space, "
            f"{limits['max_processes']} processes, {limits['file_size_mb']} MiB files")


_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


def md_text(text: str, limit: int | None = 160) -> str:
    """``text`` as literal Markdown inline text: one line (line breaks and other control characters
    become spaces), cut to ``limit`` characters, each ASCII punctuation character backslash-escaped."""
    flat = "".join(ch if ch.isprintable() else " " for ch in " ".join(text.splitlines()))
    return _PUNCTUATION.sub(r"\\\1", flat[:limit])


def write_code_report(result: CodeEvalResult, out_dir: str | Path, *, problems: str, samples: str) -> Path:
    """results.json, samples.jsonl, report.md and passk.png for ``eval code``."""
    with report_dir(out_dir) as tmp:
        dump_json({"kind": "code", **result.summary(), "per_task": result.per_task, "isolation": result.isolation,
                   "limits": result.limits, "problems": problems, "samples_file": samples}, tmp / "results.json")
        write_jsonl(tmp / "samples.jsonl", map(asdict, result.samples))
        if result.scores:
            plot_pass_at_k(result.scores, tmp / "passk.png")
        (tmp / "report.md").write_text(code_markdown(result, problems=problems, samples=samples), encoding="utf-8")
    return Path(out_dir)


# ---- several models on the same problems -----------------------------------------------------------

_METRIC_LABELS = {"exact_match": "exact match (infill vs canonical middle)",
                  "edit_similarity": "edit similarity (infill vs canonical middle)"}


def comparison_markdown(comparison: ModelComparison, summary: Mapping[str, Any]) -> str:
    """Markdown of ``eval code --model RUN``: one table, a column per model, then the paired differences."""
    models = summary["models"]
    names = list(models)
    first = models[names[0]]
    keys = [k for k in first if k.startswith("pass@")] + [k for k in ("exact_match", "edit_similarity") if k in first]
    lines = ["# sc2tune eval code", "", f"- model: {md_text(comparison.target, None)}",
             f"- problems: {md_text(comparison.problems, None)} ({first['tasks']} tasks, "
             f"{first['samples'] // max(1, first['tasks'])} sample(s) per task per model)",
             f"- sandbox: {comparison.models[names[0]].result.isolation}",
             f"- per-sample limits: {_limits_text(comparison.models[names[0]].result.limits)}", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in keys:
        lines.append(f"| {_METRIC_LABELS.get(key, key)} | " + " | ".join(f"{models[n][key]:.4f}" for n in names) + " |")
        lines.append("| 95% interval | " + " | ".join(_interval(models[n]["ci95"].get(key)) for n in names) + " |")
    for status in sorted({s for n in names for s in models[n]["status_counts"]}):
        lines.append(f"| samples {status} | " + " | ".join(str(models[n]["status_counts"].get(status, 0))
                                                            for n in names) + " |")
    lines += ["", "95% intervals: percentile bootstrap over tasks (seed 0, 1000 resamples)."]
    lines += _differences_section(summary.get("differences", {}), "tasks", "the paired bootstrap over tasks")
    lines += ["", "## First samples", "", "| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    firsts = {n: {} for n in names}
    for n in names:
        for sample in comparison.models[n].samples:
            firsts[n].setdefault(sample.task_id, sample.completion)
    for task in list(firsts[names[0]])[:5]:
        lines.append(f"| {md_text(task)} | " + " | ".join(md_text(firsts[n].get(task, ""), 80) for n in names) + " |")
    lines += ["", "Samples: " + ", ".join(f"`samples-{n}.jsonl`" for n in names) + "; verdicts and scores per "
              "sample: " + ", ".join(f"`results-{n}.jsonl`" for n in names) + "."]
    return "\n".join(lines) + "\n"


def write_comparison_report(comparison: ModelComparison, out_dir: str | Path) -> Path:
    """results.json, report.md, samples-<model>.jsonl and results-<model>.jsonl for ``eval code --model RUN``."""
    with report_dir(out_dir) as tmp:
        summary = comparison.summary()
        dump_json({"kind": "code", **summary, "problems": comparison.problems, "target": comparison.target,
                   "per_task": {n: s.result.per_task for n, s in comparison.models.items()}}, tmp / "results.json")
        for name, scores in comparison.models.items():
            write_jsonl(tmp / f"samples-{name}.jsonl", map(asdict, scores.samples))
            write_jsonl(tmp / f"results-{name}.jsonl", comparison.per_sample_rows(name))
        (tmp / "report.md").write_text(comparison_markdown(comparison, summary), encoding="utf-8")
    return Path(out_dir)


# ---- run evaluation report --------------------------------------------------------------------------

_ROWS = [("loss", "held-out loss"), ("perplexity", "perplexity"), ("tokens", "scored tokens"),
         ("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("examples", "examples")]


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def run_markdown(data: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    """Markdown report of ``eval RUN``: one column per model."""
    models = data["models"]
    names = list(models)
    lines = ["# sc2tune eval", "", f"- run: `{data['run']}`", f"- task: {data['task']}",
             f"- held-out rows: {data['eval_rows']}", "", "| metric | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for key, label in _ROWS:
        if any(key in models[n] for n in names):
            lines.append(f"| {label} | " + " | ".join(_fmt(models[n].get(key, "")) for n in names) + " |")
    kinds = sorted({k for n in names for k in models[n].get("infill", {})})
    for kind in kinds:
        for key in ("exact_match", "edit_similarity"):
            cells = [_fmt(models[n].get("infill", {}).get(kind, {}).get(key, "")) for n in names]
            lines.append(f"| infill {kind}: {key.replace('_', ' ')} | " + " | ".join(cells) + " |")
            bounds = [models[n].get("infill", {}).get(kind, {}).get("ci95", {}).get(key) for n in names]
            if any(bounds):
                lines.append("| 95% interval | " + " | ".join(_interval(b) for b in bounds) + " |")
    if kinds:
        counts = {k: next(models[n]["infill"][k]["count"] for n in names if k in models[n].get("infill", {}))
                  for k in kinds}
        lines += ["", "Infilling: greedy generation of the hole between `<fim_prefix>prefix<fim_suffix>suffix"
                  "<fim_middle>`; 95% intervals: percentile bootstrap over holes; " + ", ".join(f"{counts[k]} {k} holes" for k in kinds) + "."]
    lines += _differences_section(data.get("differences", {}), "held-out holes", "the paired bootstrap")
    for name in names:
        per_class = models[name].get("per_class")
        if per_class:
            lines += ["", f"## {name}: per class", "", "| class | precision | recall | F1 | support |",
                      "|---|---|---|---|---|"]
            lines += [f"| {md_text(str(c))} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |"
                      for c, s in per_class.items()]
    for title, file in plots.items():
        lines += ["", f"## {title}", "", f"![{title}]({file})"]
    return "\n".join(lines) + "\n"


def write_run_report(data: Mapping[str, Any], out_dir: str | Path, *, metrics_file: Path | None = None) -> Path:
    """results.json, report.md, loss.png (when the run has metrics.jsonl) and confusion-<model>.png."""
    with report_dir(out_dir) as tmp:
        plots: dict[str, str] = {}
        if metrics_file is not None and metrics_file.is_file():
            train, evals = read_metrics(metrics_file)
            if train or evals:
                plot_loss_curves(train, evals, tmp / LOSS_PLOT, title="training run")
                plots["loss curves"] = LOSS_PLOT
        for name, scores in data["models"].items():
            if "confusion" in scores:
                file = f"confusion-{name}.png"
                plot_confusion(scores["confusion"], scores["labels"], tmp / file, title=f"{name}: confusion matrix")
                plots[f"{name}: confusion matrix"] = file
        dump_json(dict(data), tmp / "results.json")
        (tmp / "report.md").write_text(run_markdown(data, plots), encoding="utf-8")
    return Path(out_dir)
