"""Serving a trained model over an existing engine: llama.cpp through llama-cpp-python's OpenAI-compatible
server, with sc2tune's layer in front (health, API key, parameter ranges, StarCoder2's FIM prompt, ``n``).

Modules: :mod:`~sc2tune.serving.params` (a request's parameters: checked, rewritten for the engine),
:mod:`~sc2tune.serving.fim` (the PSM prompt from token ids), :mod:`~sc2tune.serving.app` (the layer in front of
llama-cpp-python's app), :mod:`~sc2tune.serving.completion` (``/v1/completions`` on the ``Llama`` object's own
API), :mod:`~sc2tune.serving.source` (PATH to a GGUF file, its metadata), :mod:`~sc2tune.serving.api`
(``build_app``, ``serve``).
Nothing here is imported by ``import sc2tune``; the engine (the ``serve`` extra) is imported when a server starts.
"""
