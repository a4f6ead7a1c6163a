"""The command line: every command's options come from its function, the README's claims about it, the
exits (usage error 2, UserError its code, no traceback), overrides after options, and train's rank check."""

from __future__ import annotations

import functools
import inspect
import os
import re
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from sc2tune.commands import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BOX = re.compile(r"[│╭╮╰╯─]")  # rich's panel borders around the help


def _help(*args: str) -> str:
    """``sc2tune ARGS --help`` in a fresh process, wide enough that nothing wraps, borders removed."""
    env = {**os.environ, "TERMINAL_WIDTH": "2000", "COLUMNS": "2000", "NO_COLOR": "1"}
    result = subprocess.run([sys.executable, "-m", "sc2tune", *args, "--help"], capture_output=True, text=True,
                            env=env, cwd=ROOT)
    assert result.returncode == 0, (args, result.stderr)
    return " ".join(BOX.sub(" ", result.stdout).split())


def _declared(function) -> list[tuple[str, str]]:
    """(name on the command line, help) of each parameter, read off the function's signature."""
    hints = typing.get_type_hints(function, include_extras=True)
    found = []
    for name in inspect.signature(function).parameters:
        info = next(m for m in typing.get_args(hints[name])[1:] if hasattr(m, "help"))
        if type(info).__name__ == "ArgumentInfo":
            shown = info.metavar or name.upper()
        else:
            # in Annotated, typer.Option("--json") holds the name as its first argument (its ``default`` slot)
            decls = [info.default, *info.param_decls] if isinstance(info.default, str) else info.param_decls
            shown = next((d for d in decls if d.startswith("--")), f"--{name.replace('_', '-')}")
        found.append((shown, info.help or ""))
    return found


def test_readme_lists_exactly_the_cli_commands():
    documented = set(re.findall(r"^\| `sc2tune ([a-z-]+)", README, flags=re.M))
    assert documented == set(COMMANDS)


def test_readme_has_the_two_setup_commands_ci_runs():
    main = [line for line in README.splitlines() if line.rstrip().endswith("# main-command")]
    test = [line for line in README.splitlines() if line.rstrip().endswith("# test-command")]
    assert len(main) == len(test) == 1
    for line in main + test:
        assert line.startswith("pip install torch==2.13.0 && "), "torch (CPU build) is installed first"
    assert "sc2tune quickstart" in main[0] and "pytest" in test[0]
    assert "# test-command" in (ROOT / ".ci" / "run").read_text()


def test_top_level_help_lists_every_command_with_its_docstring():
    out = _help()
    for name, command in COMMANDS.items():
        first = " ".join(command.help.split("\n\n")[0].split())
        assert f"{name} {first[:40]}" in out, name


VARIANTS = {**COMMANDS, **{f"{n} {word}": r for n, c in COMMANDS.items() for word, r in c.routes.items()}}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_help_lists_every_parameter_of_the_command_function_with_its_help(name: str):
    out = _help(*name.split())
    function = VARIANTS[name].function()
    declared = _declared(function)
    assert len(declared) == len(inspect.signature(function).parameters)
    for shown, text in declared:
        assert text.strip(), f"{name}: {shown} has no help"
        visible = " ".join(text.replace("`", "").split())  # help is markdown: `code` shows without backticks
        assert shown in out and visible in out, (name, shown, text)


def test_help_pages_show_meaningful_defaults():
    out = _help("generate")
    assert "tokens to generate at most [default: 128]" in out and "[default: 0.2]" in out
    assert "default: None" not in out and "default: False" not in out


def test_the_command_layer_imports_nothing_heavy():
    code = ("import sys, sc2tune.cli; heavy = {'torch', 'transformers', 'datasets', 'peft', 'accelerate'}; "
            "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


_HELP_PROBE = """
import contextlib, io, sys
from sc2tune.cli import main
from sc2tune.commands import COMMANDS
names = [[n] for n in COMMANDS] + [[n, w] for n, c in COMMANDS.items() for w in c.routes]
with contextlib.redirect_stdout(io.StringIO()):
    codes = {" ".join(n): main([*n, "--help"]) for n in names}
heavy = {'torch', 'transformers', 'datasets', 'peft', 'accelerate'}
print("RESULT", sorted(set(codes.values())), "merge" in codes, sorted(heavy & set(sys.modules)))
"""


def test_every_commands_help_imports_nothing_heavy():
    """``sc2tune merge --help`` (options derived from ``sc2tune.merging.merge``) and the others stay light."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, cwd=ROOT, env=env,
                            timeout=300)
    assert "RESULT [0] True []" in result.stdout.splitlines(), result.stdout[-2000:] + result.stderr[-2000:]


def test_public_api_names_resolve():
    import sc2tune

    for name in sc2tune.__all__:
        assert getattr(sc2tune, name) is not None, name


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text("# t\ntask: fim\ndata:\n  train: x\n")
    return path


def test_overrides_may_follow_and_surround_options(recipe: Path, run_cli):
    result = run_cli("validate", str(recipe), "train.lr=0.5", "--print", "train.epochs=7", "--schema-only",
                     "data.eval=null")
    assert result.returncode == 0, result.stderr
    assert "lr: 0.5" in result.stdout and "epochs: 7" in result.stdout and "eval: null" in result.stdout


def test_trust_remote_code_is_the_command_lines_say_after_the_overrides(recipe: Path, run_cli):
    off = run_cli("validate", str(recipe), "--print", "--schema-only")
    assert "trust_remote_code: false" in off.stdout
    on = run_cli("validate", str(recipe), "model.trust_remote_code=false", "--trust-remote-code", "--print",
                 "--schema-only")
    assert on.returncode == 0 and "trust_remote_code: true" in on.stdout


@pytest.mark.parametrize("args, message", [
    (["validate", "R", "--bogus"], "No such option: --bogus"),
    (["trian"], "No such command 'trian'"),
    (["generate", "P", "--max-new-tokens", "many"], "Invalid value for '--max-new-tokens'"),
    (["merge", "ADAPTER"], "Missing option '--out'"),
    (["data", "R", "--show", "-1"], "Invalid value for '--show'"),
    (["merge", "A", "--out", "O", "--dtype", "float8"], "Invalid value for '--dtype'"),
])
def test_a_usage_error_exits_2_with_the_usage_and_the_problem(args: list[str], message: str, run_cli):
    result = run_cli(*args)
    assert result.returncode == 2, result
    assert message in result.stderr and "Usage: sc2tune" in result.stderr and "Traceback" not in result.stderr


def test_a_user_error_exits_with_its_code_and_no_traceback(tmp_path: Path, run_cli):
    plain = run_cli("plan")  # a UserError (exit 1)
    assert plain.returncode == 1 and plain.stderr.startswith("sc2tune plan: error: give a recipe to plan")
    recipe_error = run_cli("validate", str(tmp_path / "missing.yaml"))  # a RecipeError (exit 2)
    assert recipe_error.returncode == 2 and recipe_error.stderr.startswith("sc2tune validate: error: ")
    result = subprocess.run([sys.executable, "-m", "sc2tune", "-v", "plan"], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "sc2tune plan: error: give a recipe to plan" in result.stderr


def test_ctrl_c_exits_130_without_a_traceback(run_cli, monkeypatch: pytest.MonkeyPatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("sc2tune.recipe.recipe_json_schema", interrupted)
    result = run_cli("schema")
    assert result.returncode == 130 and result.stderr == "interrupted\n"


@pytest.mark.parametrize("main_process", [True, False])
@pytest.mark.parametrize("preempted", [False, True])
def test_train_reports_on_the_main_process_only(main_process: bool, preempted: bool, recipe: Path, run_cli,
                                                 monkeypatch: pytest.MonkeyPatch):
    """The train command asks accelerate which process it is (after training); train() itself is faked."""
    seen = {}

    def fake_train(recipe, *, resume, show_progress):
        seen.update(lr=recipe.train.lr, resume=resume)
        return SimpleNamespace(preempted=preempted, global_step=5, adapter_dir="OUT/adapter", output_dir="OUT",
                               final_eval={"eval_loss": 1.25}, train_tokens_per_second=None)

    import sc2tune.training

    accelerate = ModuleType("accelerate")
    accelerate.PartialState = lambda: SimpleNamespace(is_main_process=main_process)  # type: ignore[attr-defined]
    monkeypatch.setattr(sc2tune.training, "train", functools.wraps(sc2tune.training.train)(fake_train))
    monkeypatch.setitem(sys.modules, "accelerate", accelerate)

    result = run_cli("train", str(recipe), "--resume", "train.lr=0.25")
    assert seen == {"lr": 0.25, "resume": True}
    assert result.returncode == (143 if preempted else 0)
    if not main_process:
        assert result.stdout == result.stderr == ""
    elif preempted:
        assert "preempted at step 5" in result.stderr and "--resume" in result.stderr
    else:
        assert "done: 5 steps; adapter in OUT/adapter" in result.stdout and "eval_loss: 1.2500" in result.stdout


def test_train_json_summary_is_the_result_without_the_model(recipe: Path, run_cli, monkeypatch: pytest.MonkeyPatch):
    import json

    import sc2tune.training
    from sc2tune.training.run import TrainResult

    def fake_train(recipe, *, resume, show_progress):
        return TrainResult(Path("OUT"), Path("OUT/adapter"), 5, False, {"eval_loss": 1.25}, 812.5, 1, model=object())

    monkeypatch.setattr(sc2tune.training, "train", functools.wraps(sc2tune.training.train)(fake_train))
    result = run_cli("train", str(recipe), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "output_dir": "OUT", "adapter_dir": str(Path("OUT/adapter")), "global_step": 5, "preempted": False,
        "final_eval": {"eval_loss": 1.25}, "train_tokens_per_second": 812.5, "skipped_steps": 1}


def test_plan_defaults_are_the_planners():
    from sc2tune.planning.throughput import DEFAULT_MFU

    assert inspect.signature(COMMANDS["plan"].function()).parameters["mfu"].default == DEFAULT_MFU


def test_validate_checks_lora_targets_against_the_architecture(run_cli):
    recipe = ROOT / "recipes" / "quickstart" / "alpaca.yaml"
    result = run_cli("validate", str(recipe), "adapter.target_modules=[q_proj,gate_proj]")
    assert result.returncode == 2 and "gate_proj" in result.stderr and "c_fc" in result.stderr
    ok = run_cli("validate", str(ROOT / "recipes" / "starcoder2-7b" / "fim-qlora.yaml"))
    assert ok.returncode == 0 and "targets ok" in ok.stdout
