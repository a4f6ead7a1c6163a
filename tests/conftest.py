"""Shared fixtures: the built-in tiny model and its tokenizer, loaded once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from sc2tune.modeling import ModelSource, load_tokenizer

    return load_tokenizer(ModelSource())


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    from sc2tune.modeling import resolve_model_path
    from sc2tune.recipe import TINY_MODEL

    return resolve_model_path(TINY_MODEL)


def _run_cli(*args: str):
    """``sc2tune ARGS`` in this process (a subprocess costs seconds of imports per call): exit status and
    output; argparse's own exits count as statuses. An uncaught exception fails the test, as a traceback would."""
    import contextlib
    import io
    from types import SimpleNamespace

    from sc2tune.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture
def run_cli():
    """Run the CLI in-process: ``run_cli("validate", path)`` -> (returncode, stdout, stderr)."""
    return _run_cli
