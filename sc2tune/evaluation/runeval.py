"""``sc2tune eval RUN_OR_RECIPE``: score base, adapter and merged models of one run side by side.

A RUN is an output folder written by ``sc2tune train``::

    OUTPUT/adapter/   PEFT adapter + recipe.yaml + tokenizer (+ labels.json for classify)
    OUTPUT/model/     instead of adapter/ for adapter.method: full
    OUTPUT/merged/    after ``sc2tune merge`` (optional)
    OUTPUT/metrics.jsonl

A RECIPE (YAML) stands for the run in its ``output_dir``. The held-out set is rebuilt through the
recipe's own data pipeline (``sc2tune.data.build_datasets``), so every model is scored on the very rows
training evaluated on. Per task:

* instruct / fim: held-out loss and perplexity (:mod:`sc2tune.evaluation.heldout`);
* fim also: greedy infilling of random spans and whole lines in held-out code (:mod:`sc2tune.evaluation.infill`);
* classify: accuracy, macro-F1, per-class precision/recall, confusion matrix, mean cross-entropy.

Infilling exact match and edit similarity carry 95% bootstrap intervals over the held-out holes
(``ci95``), and every model is compared with ``base`` (else with the first model) by a paired difference
over the same holes (``differences``: ``{"adapter-base": {"infill_span_exact_match": {"value", "ci95"}}}``,
see :mod:`sc2tune.evaluation.intervals`).

Models are loaded one at a time and freed before the next. When the run logged to wandb / mlflow / trackio
(``train.report_to``, recorded in ``OUTPUT/trackers.json``), the figures are logged to those runs too
(:meth:`RunEvalResult.tracker_figures`, :func:`sc2tune.training.trackers.log_to_run_trackers`).
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sc2tune.errors import UserError
from sc2tune.evaluation.intervals import paired_difference
from sc2tune.recipe import load_recipe

if TYPE_CHECKING:
    from sc2tune.runs import TrainedFolder

log = logging.getLogger(__name__)

MODEL_NAMES = ("base", "adapter", "merged")


@dataclass
class RunEvalResult:
    """Scores of every evaluated model, keyed by model name."""

    run_dir: str
    task: str
    eval_rows: int
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Flat numbers per model (the ``--json`` line), each model's ``ci95`` beside them, and the paired
        ``differences`` when there are several models."""
        flat: dict[str, dict[str, Any]] = {}
        for name, scores in self.models.items():
            row: dict[str, Any] = {k: v for k, v in scores.items() if isinstance(v, (int, float))}
            ci95: dict[str, list[float]] = {}
            for kind, infill in scores.get("infill", {}).items():
                for metric in ("exact_match", "edit_similarity"):
                    row[f"infill_{kind}_{metric}"] = infill[metric]
                    if metric in infill.get("ci95", {}):
                        ci95[f"infill_{kind}_{metric}"] = infill["ci95"][metric]
            if ci95:
                row["ci95"] = ci95
            flat[name] = row
        out = self.to_dict()
        del out["kind"]
        return {**out, "models": flat}  # the keys of results.json, the models' numbers flat

    def tracker_figures(self) -> dict[str, float]:
        """The summary's numbers as tracker metrics: ``eval_run/MODEL/KEY`` (``eval_run/adapter/loss``,
        ``eval_run/adapter/infill_span_exact_match``, ...) and ``eval_run/A-B/KEY`` for paired differences."""
        summary = self.summary()
        figures = {f"eval_run/{name}/{key}": float(value) for name, row in summary["models"].items()
                   for key, value in row.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
        for pair, metrics in summary.get("differences", {}).items():
            figures.update({f"eval_run/{pair}/{key}": float(d["value"]) for key, d in metrics.items()})
        return figures

    def differences(self) -> dict[str, dict[str, dict]]:
        """``{"adapter-base": {"infill_span_exact_match": {"value": d, "ci95": [lo, hi]}, ...}}``: each model
        against ``base`` (else the first model), paired bootstrap over the holes both were scored on."""
        names = list(self.models)
        if len(names) < 2:
            return {}
        reference = "base" if "base" in names else names[0]
        ref_infill = self.models[reference].get("infill", {})
        result: dict[str, dict[str, dict]] = {}
        for name in names:
            if name == reference:
                continue
            pair: dict[str, dict] = {}
            for kind, infill in self.models[name].get("infill", {}).items():
                mine, theirs = infill.get("per_case", {}), ref_infill.get(kind, {}).get("per_case", {})
                for metric in ("exact_match", "edit_similarity"):
                    if mine.get(metric) and len(mine[metric]) == len(theirs.get(metric, ())):
                        pair[f"infill_{kind}_{metric}"] = paired_difference(mine[metric], theirs[metric])
            if pair:
                result[f"{name}-{reference}"] = pair
        return result

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": "run", "run": self.run_dir, "task": self.task, "eval_rows": self.eval_rows,
                "models": self.models}
        differences = self.differences()
        if differences:
            data["differences"] = differences
        return data


def resolve_run(target: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                trust_remote_code: bool = False) -> TrainedFolder:
    """A run folder, an adapter folder inside one, or a recipe YAML (its ``output_dir``) -> the run read
    (:class:`sc2tune.runs.TrainedFolder` of kind ``run``: ``run_dir`` and ``recipe`` are set).

    ``trust_remote_code`` (``--trust-remote-code``) confirms a recipe's ``model.trust_remote_code`` and lets
    the model's own code load every model of the run."""
    from sc2tune.recipe import REMOTE_CODE_OVERRIDE
    from sc2tune.runs import RECIPE_FILE, RUN_ADAPTER, RUN_FULL, folder_kind, read_trained

    path = run_dir = Path(target)
    overrides = [*overrides, *([REMOTE_CODE_OVERRIDE] if trust_remote_code else [])]
    if path.is_file():
        run_dir = Path(load_recipe(path, overrides).output_dir)
        if not run_dir.is_dir():
            raise UserError(f"{path}: output_dir {run_dir} does not exist (nothing trained yet)",
                            hint=f"train first: sc2tune train {path}")
    elif not path.is_dir():
        raise UserError(f"{target}: no such run folder or recipe file")
    elif (run_dir / RECIPE_FILE).is_file() and run_dir.name in (RUN_ADAPTER, RUN_FULL):
        run_dir = run_dir.parent
    if folder_kind(run_dir) != "run" or not any((run_dir / sub / RECIPE_FILE).is_file()
                                                for sub in (RUN_ADAPTER, RUN_FULL)):
        raise UserError(f"{run_dir} is not a training run: no adapter/recipe.yaml (or model/recipe.yaml) inside",
                        hint="give the output_dir of a finished `sc2tune train`, or the recipe YAML itself")
    return read_trained(run_dir, overrides)  # --trust-remote-code is the override model.trust_remote_code=true


def parse_models(text: str | None, run: TrainedFolder) -> list[str]:
    """``base,adapter,merged`` -> a checked list (default: base, adapter, and merged when present)."""
    if text is None:
        return ["base", "adapter"] + (["merged"] if run.merged_dir else [])
    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in MODEL_NAMES:
            raise UserError(f"--models: unknown model '{name}'", hint="choose from base, adapter, merged")
    if "merged" in names and run.merged_dir is None:
        raise UserError(f"--models merged: {run.run_dir}/merged does not exist",
                        hint=f"run sc2tune merge {run.trained_dir} --out {run.run_dir}/merged first")
    if not names:
        raise UserError("--models is empty", hint="e.g. --models base,adapter")
    return list(dict.fromkeys(names))


def evaluate_run(run: TrainedFolder, models: list[str], *, max_examples: int | None = None, infill_examples: int = 20,
                 infill_max_new_tokens: int = 128, show_progress: bool = True) -> RunEvalResult:
    """Score each named model of ``run`` on the recipe's held-out data (see module docstring)."""
    from sc2tune.data import build_datasets
    from sc2tune.data.holes import recover_documents
    from sc2tune.evaluation.heldout import classify_predictions, heldout_loss
    from sc2tune.evaluation.infill import infill_scores, make_cases
    from sc2tune.metrics import classification_report
    from sc2tune.runs import load_trained, trained_tokenizer
    from sc2tune.training.trackers import log_to_run_trackers

    recipe, run_dir = run.recipe, run.run_dir or run.path
    if recipe is None:  # a folder read without its recipe (resolve_run always finds one)
        raise UserError(f"{run.path} has no saved recipe, so it has no held-out data to score",
                        hint="give the output_dir of a finished sc2tune train (sc2tune.resolve_run reads it)")
    tokenizer = trained_tokenizer(run)  # the tokenizer saved with the run (pad = <fim_pad>), else the base's
    bundle = build_datasets(recipe, tokenizer, show_progress=show_progress)
    if bundle.eval is None or len(bundle.eval) == 0:
        raise UserError(f"the recipe of {run_dir} holds out no data (data.eval is {recipe.data.eval!r})",
                        hint="add an override, e.g. data.eval=0.1 or data.eval=path/to/heldout.jsonl")
    id2label = run.labels or bundle.id2label  # labels.json of a classification adapter first
    batch = recipe.train.eval_batch_size or recipe.train.batch_size
    cases = []
    if recipe.task == "fim" and infill_examples > 0:
        docs = recover_documents(bundle.eval, tokenizer)
        cases = [c for kind in ("span", "lines")
                 for c in make_cases(docs, kind, infill_examples, recipe.train.seed)]
        if not cases:
            log.warning("no held-out code document is long enough for the infilling probe")
    result = RunEvalResult(str(run_dir), recipe.task, len(bundle.eval))
    for name in models:
        log.info("evaluating %s", name)
        # base (quantised as trained), adapter (or the full fine-tune) or merged, in eval mode
        model = load_trained(run, name, tokenizer=tokenizer, labels=id2label).model  # type: ignore[arg-type]
        scores: dict[str, Any] = {}
        if recipe.task == "classify":
            y_true, y_pred, loss = classify_predictions(model, bundle.eval, bundle.collator, batch_size=batch,
                                                        max_examples=max_examples, show_progress=show_progress)
            names = id2label or {i: str(i) for i in sorted(set(y_true) | set(y_pred))}
            report = classification_report([names[i] for i in y_true], [names[i] for i in y_pred],
                                           labels=[names[i] for i in sorted(names)])
            scores.update(loss=loss, **report.to_dict(), examples=len(y_true))
        else:
            scores.update(heldout_loss(model, bundle.eval, bundle.collator, batch_size=batch,
                                       max_examples=max_examples, chunk_size=recipe.train.loss_chunk_size,
                                       show_progress=show_progress))
            if cases:
                scores["infill"] = infill_scores(model, tokenizer, cases, max_length=recipe.data.max_length,
                                                 max_new_tokens=infill_max_new_tokens)
        result.models[name] = scores
        del model
        gc.collect()
    logged = log_to_run_trackers(run_dir, result.tracker_figures())  # the trackers train.report_to named
    if logged:
        log.info("eval figures logged to the run's %s", ", ".join(logged))
    return result
