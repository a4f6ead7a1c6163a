"""Where a run may write: a new folder, an empty one, or an earlier run's; any other folder is refused and
left exactly as it was (``sc2tune.training.run.check_output_dir``, ``sc2tune.runs.is_run_folder``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc2tune.errors import RecipeError, UserError
from sc2tune.recipe import load_recipe
from sc2tune.runs import is_run_folder
from sc2tune.training import train
from sc2tune.training.run import check_output_dir

RECIPE = Path(__file__).parents[2] / "recipes" / "quickstart" / "alpaca.yaml"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in folder.rglob("*")}


@pytest.mark.parametrize("resume", [False, True])
def test_a_project_folder_is_refused_and_left_untouched(tmp_path: Path, resume: bool):
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.json").write_text(json.dumps({"mine": 1}))
    (project / "summary.json").write_text("{}")
    (project / "src").mkdir()
    before = _snapshot(project)
    # data that does not exist: before the check, the run took its lock in the folder and only then failed
    recipe = load_recipe(RECIPE, [f"output_dir={project}", f"data.train={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(UserError, match=rf"output_dir {project} is a folder that is not an sc2tune run "
                       r"\(it holds data\.json, src, summary\.json\)"):
        train(recipe, resume=resume, show_progress=False)
    assert _snapshot(project) == before  # not even the lock file


def test_the_filesystem_root_is_not_an_output_dir():
    with pytest.raises(RecipeError, match="filesystem root"):
        load_recipe(RECIPE, ["output_dir=/"])
    with pytest.raises(RecipeError, match="filesystem root"):
        load_recipe(RECIPE, ["output_dir=/tmp/../.."])


def test_new_empty_and_run_folders_are_accepted_a_file_is_not(tmp_path: Path):
    check_output_dir(tmp_path / "new")  # does not exist yet
    empty = tmp_path / "empty"
    empty.mkdir()
    check_output_dir(empty)
    started = tmp_path / "started"  # a run killed early: its lock file (hidden), metrics, data.json
    started.mkdir()
    (started / ".sc2tune-train.lock").touch()
    (started / "metrics.jsonl").write_text("")
    check_output_dir(started)
    copied = tmp_path / "copied"  # a finished run copied without hidden files
    (copied / "adapter").mkdir(parents=True)
    (copied / "recipe.yaml").write_text("task: fim\n")
    check_output_dir(copied)
    assert is_run_folder(started) and is_run_folder(copied)
    assert not is_run_folder(empty) and not is_run_folder(tmp_path / "new")
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        check_output_dir(afile)


def test_adapter_folder_without_recipe_is_not_a_run(tmp_path: Path):
    """Only sc2tune's marks count: a folder with a model/ or adapter/ sub-folder alone is someone's project."""
    (tmp_path / "adapter").mkdir()
    (tmp_path / "summary.json").write_text("{}")
    assert not is_run_folder(tmp_path)
    with pytest.raises(UserError, match="not an sc2tune run"):
        check_output_dir(tmp_path)
