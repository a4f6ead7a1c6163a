"""Shared fixtures: the built-in tiny model and its tokenizer, loaded once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    from sc2tune.modeling import load_tokenizer
    from sc2tune.recipe import ModelSpec

    return load_tokenizer(ModelSpec())


@pytest.fixture(scope="session")
def tiny_model_dir() -> str:
    from sc2tune.modeling import resolve_model_path
    from sc2tune.recipe import TINY_MODEL

    return resolve_model_path(TINY_MODEL)
