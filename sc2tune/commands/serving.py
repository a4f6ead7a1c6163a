"""``sc2tune serve``, with the options of :func:`sc2tune.serving.api.serve`."""

from __future__ import annotations

from sc2tune.commands.derive import Command


def show_serve(_: None) -> None:
    """Serve a model (a .gguf file, or a run / merged folder exported first) over an OpenAI-compatible API on
    llama.cpp: sc2tune serve PATH [--host 127.0.0.1] [--port 8000] [--api-key KEY]."""


serve = Command(show_serve, api="sc2tune.serving.api:serve")
