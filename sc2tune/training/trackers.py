"""Experiment trackers (``train.report_to``): transformers' integrations, bracketed by one session per run.

transformers logs every training and evaluation step to wandb / mlflow / trackio through its own callbacks
(``TrainingArguments.report_to``, :func:`integrations`); TensorBoard stays sc2tune's own writer into
``OUTPUT/tensorboard/``. :func:`tracker_session` only opens and closes the trackers' runs around a whole
``train`` call, so that the final evaluation (which comes after transformers' ``on_train_end``) lands in
the same runs:

* mlflow: the run is started here, named after the output folder (transformers' callback then logs into
  it instead of starting and ending its own), and ended here as FINISHED, or FAILED on an error;
* wandb, trackio: their current runs are finished here (wandb's offline files are complete then).

``--resume`` continues the runs ``trackers.json`` recorded (a preempted run records them too): mlflow's by
its run id, wandb's by its id (``resume="allow"``, opened here so that transformers' callback logs into it);
trackio's run is found by its name (transformers opens it with ``resume="allow"``). Steps continue from the
checkpoint's.

Where each tracker writes is its own setting (``WANDB_MODE``/``WANDB_DIR``/``WANDB_PROJECT``,
``MLFLOW_TRACKING_URI``/``MLFLOW_EXPERIMENT_NAME``, ``TRACKIO_DIR``): sc2tune reads none of them.

``OUTPUT/trackers.json`` records each tracker's run, read by :func:`log_to_run_trackers` (``sc2tune eval
RUN`` logs its figures into the same runs)::

    {"wandb": {"project": P, "id": ID}, "mlflow": {"tracking_uri": U, "run_id": ID},
     "trackio": {"project": P, "name": RUN}, "step": GLOBAL_STEP}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sc2tune.atomic import write_file
from sc2tune.errors import UserError
from sc2tune.runs import RunFolder

log = logging.getLogger(__name__)

#: Trackers logged through transformers' own integration callbacks.
INTEGRATIONS = ("wandb", "mlflow", "trackio")
#: trackio's project (TrainingArguments.project, transformers' default); wandb's is WANDB_PROJECT's.
TRACKIO_PROJECT = "huggingface"


def integrations(report_to: tuple[str, ...]) -> list[str] | str:
    """``TrainingArguments.report_to`` for the recipe's trackers: the integrations, or ``"none"``."""
    chosen = [name for name in report_to if name in INTEGRATIONS]
    return chosen or "none"


@contextmanager
def tracker_session(report_to: tuple[str, ...], run_name: str, out: Path, *, main_process: bool,
                    resume: bool = False) -> Iterator[None]:
    """Open the mlflow run (and, resuming, the recorded wandb run) before training, close every tracker's run
    after it and record them in ``out/trackers.json`` (module docstring). Only the main process talks to
    trackers."""
    chosen = [name for name in report_to if name in INTEGRATIONS]
    if not chosen or not main_process:
        yield
        return
    earlier = _read_record(RunFolder(out).trackers) if resume else {}
    if "wandb" in chosen and "wandb" in earlier:
        import wandb

        wandb.init(project=earlier["wandb"]["project"], id=earlier["wandb"]["id"], resume="allow")
    mlflow = None
    if "mlflow" in chosen:
        import mlflow

        if mlflow.active_run() is None:
            try:
                if "mlflow" in earlier:
                    try:
                        mlflow.start_run(run_id=earlier["mlflow"]["run_id"])
                    except Exception as err:  # not in this store (another tracking URI, deleted): a new run
                        log.warning("mlflow: the run %s recorded in %s cannot be reopened (%s): logging to a new "
                                    "run", earlier["mlflow"]["run_id"], RunFolder(out).trackers,
                                    str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
                        mlflow.start_run(run_name=run_name)
                else:
                    mlflow.start_run(run_name=run_name)
            except Exception as err:  # mlflow's own errors (store URI, server) have no common base
                raise UserError(f"train.report_to: mlflow could not start a run in {mlflow.get_tracking_uri()}: "
                                f"{str(err).strip().splitlines()[0]}",
                                hint="check MLFLOW_TRACKING_URI (a local store: file:///ABS/PATH with "
                                "MLFLOW_ALLOW_FILE_STORE=true, or sqlite:///ABS/PATH.db with the full mlflow "
                                "package), or drop mlflow from train.report_to") from None
    failed = True
    try:
        yield
        failed = False
    finally:
        record = _record(chosen, run_name, mlflow)
        _finish(chosen, mlflow, failed=failed)
        if record and not failed:
            record["step"] = _last_step(out)
            write_file(RunFolder(out).trackers, json.dumps(record, indent=2) + "\n")


def _read_record(path: Path) -> dict[str, Any]:
    """``trackers.json`` as written by :func:`tracker_session`; ``{}`` (with a warning) when missing or unreadable."""
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("%s: unreadable (%s): ignored", path, err)
        return {}
    return record if isinstance(record, dict) else {}


def _record(chosen: list[str], run_name: str, mlflow: Any) -> dict[str, Any]:
    record: dict[str, Any] = {}
    if "wandb" in chosen:
        import wandb

        if wandb.run is not None:
            record["wandb"] = {"project": wandb.run.project, "id": wandb.run.id}
    if mlflow is not None and mlflow.active_run() is not None:
        record["mlflow"] = {"tracking_uri": mlflow.get_tracking_uri(), "run_id": mlflow.active_run().info.run_id}
    if "trackio" in chosen:
        record["trackio"] = {"project": TRACKIO_PROJECT, "name": run_name}
    return record


def _finish(chosen: list[str], mlflow: Any, *, failed: bool) -> None:
    if "wandb" in chosen:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1 if failed else 0)
    if mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run(status="FAILED" if failed else "FINISHED")
    if "trackio" in chosen:
        import trackio
        from trackio import context_vars

        if context_vars.current_run.get() is not None:
            trackio.finish()


def _last_step(out: Path) -> int | None:
    """The run's last logged step (``metrics.jsonl``), the step eval figures are logged at."""
    step = None
    path = RunFolder(out).metrics
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                step = max(step or 0, int(json.loads(line).get("step", 0)))
            except (ValueError, AttributeError):
                continue
    return step


def log_to_run_trackers(run_dir: Path, figures: Mapping[str, float]) -> list[str]:
    """Log ``figures`` (``eval_run/adapter/infill_span_exact_match``: value ...) to the trackers recorded in
    ``run_dir/trackers.json`` at the run's last step; returns the trackers logged to. A tracker whose
    package is missing here is skipped with a warning (the report itself is written either way)."""
    import importlib.util

    record = _read_record(RunFolder(run_dir).trackers) if figures else {}
    step = record.get("step")
    done = []
    for name in INTEGRATIONS:
        if name not in record:
            continue
        if importlib.util.find_spec(name) is None:
            log.warning("the run logged to %s, which is not installed here: eval figures not logged there", name)
            continue
        try:
            _log_one(name, record[name], figures, step)
        except Exception as err:  # a tracker's failure (network, store) must not cost the eval report
            log.warning("eval figures not logged to %s: %s", name, err)
            continue
        done.append(name)
    return done


def _log_one(name: str, where: Mapping[str, Any], figures: Mapping[str, float], step: int | None) -> None:
    """Reopen the recorded run of tracker ``name`` and log ``figures`` at ``step``."""
    if name == "wandb":
        import wandb

        run = wandb.init(project=where["project"], id=where["id"], resume="allow")
        run.log({**figures, "train/global_step": step})  # the x-axis transformers' callback defined
        run.finish()
    elif name == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=where["tracking_uri"])
        for key, value in figures.items():
            client.log_metric(where["run_id"], key, float(value), step=step or 0)
    else:
        import trackio

        trackio.init(project=where["project"], name=where["name"], resume="allow")
        trackio.log({**figures, "train/global_step": step})
        trackio.finish()
