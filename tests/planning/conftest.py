"""Fixtures shared by the planner tests."""

from __future__ import annotations

import pytest

import sc2tune.configs as configs


@pytest.fixture
def meta_path(monkeypatch: pytest.MonkeyPatch):
    """Switch the analytic layouts off: every layout comes from the meta model."""
    def run(fn, *args, **kwargs):
        with monkeypatch.context() as m:
            m.setattr(configs, "_analytic_cached", lambda *a: None)
            return fn(*args, **kwargs)
    return run
