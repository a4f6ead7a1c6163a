"""train.report_to: wandb, mlflow and trackio through transformers' integrations, all offline.

One tiny FIM run logs to the three trackers at once (a subprocess: each tracker's store is chosen by its own
environment variables, trackio's when it is imported); it is preempted (SIGTERM) after step 2, stops at the end
of step 3 and is resumed (``--resume``) to step 4. The loss each tracker holds is read back from its own store
(wandb's offline run files, mlflow's client on a local file store, trackio's SQLite database) and compared with
the run's metrics.jsonl: one tracker run holds all four steps. The rest checks the recipe key without training.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sc2tune.errors import RecipeError, UserError
from sc2tune.recipe import check_trackers_installed, load_recipe

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "quickstart" / "fim.yaml"
EVAL_FIGURE = "eval_run/adapter/infill_span_exact_match"

SCRIPT = textwrap.dedent("""
    import signal
    import sys
    from pathlib import Path
    from sc2tune.recipe import load_recipe
    from sc2tune.training import callbacks, train
    from sc2tune.training.trackers import log_to_run_trackers
    on_log = callbacks.MetricsFileCallback.on_log
    def preempt_after_step_2(self, args, state, control, logs=None, **kwargs):  # SIGTERM, as a scheduler sends it
        on_log(self, args, state, control, logs=logs, **kwargs)
        if state.global_step == 2 and logs and "loss" in logs:
            callbacks.MetricsFileCallback.on_log = on_log
            signal.raise_signal(signal.SIGTERM)
    callbacks.MetricsFileCallback.on_log = preempt_after_step_2
    recipe = load_recipe(sys.argv[2], sys.argv[3:])
    assert train(recipe, show_progress=False).preempted
    train(recipe, resume=True, show_progress=False)
    print(log_to_run_trackers(Path(recipe.output_dir), {sys.argv[1]: 0.25}))
""")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("trackers")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"), "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp / "wandb-config"), "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
           "MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
           "MLFLOW_EXPERIMENT_NAME": "sc2tune-test", "TRACKIO_DIR": str(tmp / "trackio"),
           "PYTHONPATH": str(ROOT)}
    (tmp / "wandb").mkdir()
    out = tmp / "tracked"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, EVAL_FIGURE, str(RECIPE), "train.max_steps=4", "train.logging_steps=1",
         "train.save_steps=100", "data.eval=null", "train.report_to=[wandb,mlflow,trackio]", f"output_dir={out}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            losses[row["step"]] = row["loss"]
    assert sorted(losses) == [1, 2, 3, 4]
    assert (out / "checkpoints" / "checkpoint-3").is_dir()  # the preempted run's
    return {"tmp": tmp, "out": out, "losses": losses, "record": json.loads((out / "trackers.json").read_text()),
            "stdout": proc.stdout}


def _wandb_history(run_file: Path) -> list[dict]:
    """History rows of a wandb offline ``.wandb`` file: a LevelDB-style log (7-byte ``:W&B`` header, 32 KiB
    blocks of records ``crc32 u32, length u16, type u8`` (1 full, 2 first, 3 middle, 4 last)) of protobuf
    ``Record`` messages."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, chunk, rows = 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.slow
def test_wandb_offline_holds_the_loss_at_each_step(tracked_run):
    run_id = tracked_run["record"]["wandb"]["id"]
    files = sorted((tracked_run["tmp"] / "wandb" / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert files, "no offline wandb run file"
    rows = [row for f in files for row in _wandb_history(f)]
    logged = {row["train/global_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert logged == pytest.approx(tracked_run["losses"], rel=1e-12)
    # the eval figure, logged afterwards into the same run at the last step
    assert any(row.get(EVAL_FIGURE) == 0.25 and row["train/global_step"] == 4 for row in rows)


@pytest.mark.slow
def test_mlflow_local_store_holds_the_loss_at_each_step(tracked_run, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow's own switch for its file store

    where = tracked_run["record"]["mlflow"]
    client = MlflowClient(tracking_uri=(tracked_run["tmp"] / "mlruns").as_uri())
    run = client.get_run(where["run_id"])
    assert run.info.run_name == "tracked" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "sc2tune-test"
    logged = {m.step: m.value for m in client.get_metric_history(where["run_id"], "loss")}
    assert logged == pytest.approx(tracked_run["losses"], rel=1e-6)
    [figure] = client.get_metric_history(where["run_id"], EVAL_FIGURE)
    assert (figure.step, figure.value) == (4, 0.25)
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no stray run from the final logs


@pytest.mark.slow
def test_trackio_local_database_holds_the_loss_at_each_step(tracked_run):
    where = tracked_run["record"]["trackio"]
    db = tracked_run["tmp"] / "trackio" / f"{where['project']}.db"
    with sqlite3.connect(db) as con:
        rows = [json.loads(m) for (m,) in con.execute("SELECT metrics FROM metrics WHERE run_name = ?", ("tracked",))]
    logged = {row["train/global_step"]: row["train/loss"] for row in rows if "train/loss" in row}
    assert logged == pytest.approx(tracked_run["losses"], rel=1e-12)
    assert any(row.get(EVAL_FIGURE) == 0.25 and row["train/global_step"] == 4 for row in rows)


@pytest.mark.slow
def test_tensorboard_only_when_named(tracked_run):
    assert not (tracked_run["out"] / "tensorboard").exists()
    assert (tracked_run["out"] / "recipe.yaml").is_file()  # the run's own files are written whatever the trackers
    assert tracked_run["stdout"].strip().splitlines()[-1] == "['wandb', 'mlflow', 'trackio']"


def test_default_is_tensorboard_and_none_stands_alone():
    assert load_recipe(RECIPE).train.report_to == ("tensorboard",)
    assert load_recipe(RECIPE, ["train.report_to=none"]).train.report_to == ("none",)
    assert load_recipe(RECIPE, ["train.report_to=wandb"]).train.report_to == ("wandb",)
    with pytest.raises(RecipeError, match=r"train\.report_to: 'none' stands alone"):
        load_recipe(RECIPE, ["train.report_to=[none,wandb]"])


def test_unknown_tracker_is_a_recipe_error_naming_the_key():
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPE, ["train.report_to=[tensorboard,wandbb]"])
    assert "train.report_to: unknown tracker 'wandbb' (did you mean 'wandb'?)" in str(err.value)


def test_training_arguments_carry_the_integrations_only(tmp_path):
    from sc2tune.modeling import objective_for
    from sc2tune.training.run import _training_arguments

    def report_to(trackers: str) -> list[str]:
        recipe = load_recipe(RECIPE, [f"train.report_to={trackers}"])
        args = _training_arguments(recipe, objective_for("fim"), tmp_path / "run", False)
        assert args.run_name == "run"
        return args.report_to

    assert report_to("none") == []
    assert report_to("[tensorboard]") == []  # sc2tune's own writer into OUTPUT/tensorboard
    assert report_to("[tensorboard,mlflow,wandb]") == ["mlflow", "wandb"]


def test_missing_tracker_package_names_the_extra_before_any_model_loads(tmp_path, monkeypatch):
    from sc2tune.training import train

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trackio" else real(name, *a))
    recipe = load_recipe(RECIPE, ["train.report_to=[tensorboard,trackio]", f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(RecipeError) as err:
        check_trackers_installed(recipe)
    assert "train.report_to names 'trackio'" in str(err.value)
    assert "pip install 'sc2tune[trackio]'" in str(err.value)
    with pytest.raises(RecipeError, match=r"sc2tune\[trackio\]"):
        train(recipe)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    from sc2tune.commands.setup import validate

    with pytest.raises(RecipeError, match=r"sc2tune\[trackio\]"):
        validate(str(RECIPE), ["train.report_to=trackio"])
    validate(str(RECIPE), ["train.report_to=trackio"], schema_only=True)  # the schema alone is fine


def test_unusable_mlflow_store_is_a_user_error(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from sc2tune.training.trackers import tracker_session

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    with pytest.raises(UserError, match=r"train\.report_to: mlflow could not start a run"), \
            tracker_session(("mlflow",), "run", tmp_path, main_process=True):
        pass
    assert not (tmp_path / "trackers.json").exists()


def test_the_record_is_the_run_folders_trackers_file(tmp_path):
    """``RunFolder.trackers`` names ``trackers.json``; the session writes its record there (trackio: no store is
    opened when no run is current) with the last step of ``metrics.jsonl``."""
    pytest.importorskip("trackio")
    from sc2tune.runs import RunFolder
    from sc2tune.training.trackers import tracker_session

    assert RunFolder(tmp_path).trackers == tmp_path / "trackers.json"
    (tmp_path / "metrics.jsonl").write_text('{"step": 2, "loss": 1.0}\n{"step": 5, "eval_loss": 0.5}\n')
    with tracker_session(("trackio",), "r", tmp_path, main_process=True):
        pass
    assert json.loads((tmp_path / "trackers.json").read_text()) == {
        "trackio": {"project": "huggingface", "name": "r"}, "step": 5}


def test_eval_report_figures_for_trackers():
    from sc2tune.evaluation.runeval import RunEvalResult

    per_case = {"exact_match": [1.0, 0.0], "edit_similarity": [1.0, 0.5]}
    base = {"exact_match": 0.0, "edit_similarity": 0.5, "per_case": {"exact_match": [0.0, 0.0],
                                                                     "edit_similarity": [0.5, 0.5]}}
    result = RunEvalResult("r", "fim", 3, {
        "base": {"loss": 2.0, "infill": {"span": base}},
        "adapter": {"loss": 1.5, "infill": {"span": {"exact_match": 0.5, "edit_similarity": 0.75,
                                                     "per_case": per_case}}}})
    figures = result.tracker_figures()
    assert figures["eval_run/base/loss"] == 2.0
    assert figures["eval_run/adapter/infill_span_exact_match"] == 0.5
    assert figures["eval_run/adapter/infill_span_edit_similarity"] == 0.75
    assert figures["eval_run/adapter-base/infill_span_exact_match"] == pytest.approx(0.5)  # (1+0)/2 - 0
    assert figures["eval_run/adapter-base/infill_span_edit_similarity"] == pytest.approx(0.25)


def test_a_failing_tracker_does_not_cost_the_eval_report(tmp_path, caplog):
    pytest.importorskip("mlflow")
    from sc2tune.training.trackers import log_to_run_trackers

    (tmp_path / "trackers.json").write_text(json.dumps(
        {"mlflow": {"tracking_uri": "nosuchscheme://nowhere", "run_id": "0"}, "step": 3}))
    assert log_to_run_trackers(tmp_path, {EVAL_FIGURE: 0.25}) == []
    assert "eval figures not logged to mlflow" in caplog.text
    assert log_to_run_trackers(tmp_path / "absent", {EVAL_FIGURE: 0.25}) == []  # a run without trackers
