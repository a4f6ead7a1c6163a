"""``sc2tune eval code --model RUN --out DIR``: the models of one run on the same problems, side by side.

Models of a trained folder (``--models``, comma list; :func:`model_names`):

* ``base``: the recipe's base model, loaded as trained (4-bit for QLoRA);
* ``adapter``: the base with the run's PEFT adapter (a LoRA/QLoRA run: ``OUTPUT/adapter``);
* ``trained``: a full fine-tune's own weights (``OUTPUT/model``, ``adapter.method: full``, e.g. the quickstart);
* ``merged``: ``OUTPUT/merged`` after ``sc2tune merge``;
* ``model``: a plain model folder (no run around it), the only model it has.

Default: ``base`` and the run's trained model (``adapter`` or ``trained``). Each model in turn is loaded,
writes ``n_samples`` samples per problem in batches (:func:`sc2tune.evaluation.sampling.complete_problems`,
the prompts as the run trained: :mod:`sc2tune.evaluation.prompts`), is freed, and its samples are judged in
the sandbox (:func:`sc2tune.evaluation.codeeval.evaluate_code`).

Scores per model: pass@k over tasks, and, for FIM problems (with a canonical middle), **exact match**
(``sample.strip() == middle.strip()``) and **edit similarity** (``1 - lev / max(len)``) of the infill
against the canonical middle (:func:`reference_middle`), averaged over a task's samples, then over tasks: a model that passes nothing
(the tiny one) still shows how close it came. Each carries a 95% percentile-bootstrap interval over tasks,
and each model is compared with ``base`` (else the first model) by the paired difference over the same
tasks (:mod:`sc2tune.evaluation.intervals`): ``differences["adapter-base"]["pass@1"] = {"value", "ci95"}``.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.errors import UserError
from sc2tune.evaluation.codeeval import CodeEvalResult, evaluate_code, pass_at_k_differences
from sc2tune.evaluation.intervals import bootstrap_interval, paired_difference
from sc2tune.evaluation.problems import Problem, Sample
from sc2tune.metrics import edit_similarity, exact_match

if TYPE_CHECKING:
    from sc2tune.evaluation.sandbox import SandboxLimits
    from sc2tune.generation import Sampling
    from sc2tune.runs import TrainedFolder

log = logging.getLogger(__name__)

MODEL_NAMES = ("base", "adapter", "trained", "merged", "model")
TEXT_METRICS = ("exact_match", "edit_similarity")
#: How each name is loaded by :func:`sc2tune.runs.load_trained`.
_LOAD_AS = {"base": "base", "adapter": "adapter", "trained": "adapter", "merged": "merged", "model": "merged"}


@dataclass
class ModelScores:
    """One model's samples, their verdicts and the text scores of its infills."""

    name: str
    samples: list[Sample]
    result: CodeEvalResult
    text: dict[str, float] = field(default_factory=dict)  #: exact_match, edit_similarity (FIM problems)
    text_ci95: dict[str, list[float]] = field(default_factory=dict)
    per_task_text: dict[str, dict[str, float]] = field(default_factory=dict)  #: {task: {metric: mean}}
    per_sample_text: list[dict[str, float]] = field(default_factory=list)  #: in ``samples`` order

    def summary(self) -> dict[str, Any]:
        """The single-model ``--json`` keys (:meth:`CodeEvalResult.summary`) plus the text scores, their
        intervals beside pass@k's in ``ci95``."""
        out = self.result.summary()
        return {**out, **self.text, "ci95": {**out["ci95"], **self.text_ci95}}


@dataclass
class ModelComparison:
    """Every model's scores on the same problems, and the paired differences."""

    target: str
    problems: str
    models: dict[str, ModelScores]

    @property
    def reference(self) -> str:
        return "base" if "base" in self.models else next(iter(self.models))

    @property
    def primary(self) -> str:
        """The model whose numbers are the top-level keys: the first that is not the reference."""
        return next((n for n in self.models if n != self.reference), self.reference)

    def differences(self) -> dict[str, dict[str, dict]]:
        """``{"adapter-base": {"pass@1": {"value": d, "ci95": [lo, hi]}, "exact_match": ...}}``."""
        ref = self.models[self.reference]
        out: dict[str, dict[str, dict]] = {}
        for name, scores in self.models.items():
            if name == self.reference:
                continue
            pair = pass_at_k_differences(scores.result, ref.result)
            tasks = sorted(scores.per_task_text)
            if tasks and tasks == sorted(ref.per_task_text):
                for metric in TEXT_METRICS:
                    pair[metric] = paired_difference([scores.per_task_text[t][metric] for t in tasks],
                                                     [ref.per_task_text[t][metric] for t in tasks])
            out[f"{name}-{self.reference}"] = pair
        return out

    def summary(self) -> dict[str, Any]:
        """The ``--json`` object: the primary model's keys at the top (as for one model), ``model`` naming it,
        ``models`` with every model's, and ``differences`` when there are several."""
        out = {**self.models[self.primary].summary(), "model": self.primary,
               "models": {name: scores.summary() for name, scores in self.models.items()}}
        if len(self.models) > 1:
            out["differences"] = self.differences()
        return out

    def tracker_figures(self) -> dict[str, float]:
        """``eval_code/MODEL/pass@1``, ``eval_code/A-B/pass@1`` ... for the run's trackers."""
        figures = {f"eval_code/{name}/{key}": float(value) for name, row in self.summary()["models"].items()
                   for key, value in row.items()
                   if (key.startswith("pass@") or key in TEXT_METRICS) and isinstance(value, (int, float))}
        for pair, metrics in self.differences().items():
            figures.update({f"eval_code/{pair}/{key}": float(d["value"]) for key, d in metrics.items()})
        return figures

    def per_sample_rows(self, name: str) -> list[dict[str, Any]]:
        """``results-NAME.jsonl``: each sample's verdict (:class:`SampleResult`), completion and text scores."""
        scores = self.models[name]
        by_key = {(r.task_id, r.completion_id): asdict(r) for r in scores.result.samples}
        rows, seen = [], {}
        for sample, text in zip(scores.samples, scores.per_sample_text or [{}] * len(scores.samples), strict=True):
            cid = seen.get(sample.task_id, 0)
            seen[sample.task_id] = cid + 1
            rows.append({**by_key[(sample.task_id, cid)], "completion": sample.completion, **text})
        return rows


def model_names(text: str | None, folder: TrainedFolder) -> list[str]:
    """``--models`` checked against what ``folder`` holds (module doc for the names and the default)."""
    trained = "adapter" if folder.adapter_dir else "trained" if folder.full_dir else None
    plain = trained is None and folder.recipe is None
    available = ["model"] if plain else ["base", *([trained] if trained else []),
                                         *(["merged"] if folder.merged_dir else [])]
    if text is None:
        return ["model"] if plain else ["base", trained or "merged"]
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise UserError("--models is empty", hint="e.g. --models " + ",".join(available))
    for name in names:
        if name not in MODEL_NAMES:
            raise UserError(f"--models: unknown model '{name}'", hint="choose from " + ", ".join(MODEL_NAMES))
        if name not in available:
            raise UserError(f"--models {name}: {folder.path} has no {name} model",
                            hint=f"it has: {', '.join(available)}"
                            + ("; run sc2tune merge first for merged" if name == "merged" else ""))
    return names


def reference_middle(problem: Problem) -> str | None:
    """The hole's true text: ``canonical_middle`` (``--fim`` problems), else a FIM problem's
    ``canonical_solution`` (HumanEval-infilling files keep the middle there), else None."""
    if problem.canonical_middle is not None:
        return problem.canonical_middle
    return problem.canonical_solution if problem.suffix else None


def text_scores(problems: dict[str, Problem], samples: list[Sample]
                ) -> tuple[dict[str, float], dict[str, list[float]], dict[str, dict[str, float]], list[dict]]:
    """Exact match and edit similarity of each sample against its task's canonical middle: the means over
    tasks (of each task's mean over samples), their intervals, per task, per sample. Empty when no problem
    has a canonical middle."""
    per_sample: list[dict[str, float]] = []
    sums: dict[str, dict[str, list[float]]] = {}
    for sample in samples:
        middle = reference_middle(problems[sample.task_id])
        if middle is None:
            per_sample.append({})
            continue
        row = {"exact_match": float(exact_match(sample.completion, middle)),
               "edit_similarity": edit_similarity(sample.completion, middle)}
        per_sample.append(row)
        for metric, value in row.items():
            sums.setdefault(sample.task_id, {}).setdefault(metric, []).append(value)
    per_task = {t: {m: sum(v) / len(v) for m, v in metrics.items()} for t, metrics in sums.items()}
    if not per_task:
        return {}, {}, {}, per_sample
    tasks = sorted(per_task)
    means = {m: sum(per_task[t][m] for t in tasks) / len(tasks) for m in TEXT_METRICS}
    ci95 = {m: bootstrap_interval([per_task[t][m] for t in tasks]) for m in TEXT_METRICS}
    return means, ci95, per_task, per_sample


def compare_models(target: str | Path, problems: dict[str, Problem], *, problems_name: str,
                   models: str | None = None, n_samples: int = 1, sampling: Sampling, batch_size: int = 16,
                   ks: tuple[int, ...] = (1, 10, 100), limits: SandboxLimits | None = None, workers: int = 2,
                   trust_remote_code: bool = False, show_progress: bool = True) -> ModelComparison:
    """Generate with and judge each model of ``target`` on ``problems`` (module doc)."""
    from sc2tune.evaluation.prompts import PromptStyle
    from sc2tune.evaluation.sampling import complete_problems
    from sc2tune.runs import load_trained, read_trained

    folder = read_trained(target, trust_remote_code=trust_remote_code)
    if folder.classifier:
        raise UserError(f"{target} is a sequence classifier: it writes no code", hint="give a causal LM's run")
    names = model_names(models, folder)
    style = PromptStyle.of(folder.recipe, tuple(sampling.stop))
    generated: dict[str, list[Sample]] = {}
    for name in names:
        log.info("generating with %s", name)
        loaded = load_trained(folder, _LOAD_AS[name])  # type: ignore[arg-type]
        generated[name] = complete_problems(loaded.model, loaded.tokenizer, problems, style, n_samples=n_samples,
                                            sampling=sampling, batch_size=batch_size, show_progress=show_progress,
                                            label=f"generating ({name})")
        del loaded
        gc.collect()
    scored: dict[str, ModelScores] = {}
    for name, samples in generated.items():
        result = evaluate_code(problems, samples, ks=ks, limits=limits, workers=workers, show_progress=show_progress)
        scored[name] = ModelScores(name, samples, result, *text_scores(problems, samples))
    comparison = ModelComparison(str(target), problems_name, scored)
    if folder.run_dir is not None:
        from sc2tune.training.trackers import log_to_run_trackers

        logged = log_to_run_trackers(folder.run_dir, comparison.tracker_figures())
        if logged:
            log.info("eval code figures logged to the run's %s", ", ".join(logged))
    return comparison
