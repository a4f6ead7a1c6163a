"""``sc2tune serve``: an OpenAI-compatible server on llama.cpp (llama-cpp-python's server, run by uvicorn) with
sc2tune's layer in front (:mod:`sc2tune.serving.app`). Light to import: the engine comes when it runs.

Address rule: the server listens on 127.0.0.1 unless told otherwise, and any other address (``0.0.0.0``, a LAN
address) needs ``--api-key``: the key is then asked of every request but ``/health``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from sc2tune.clihelp import Help
from sc2tune.errors import UserError

if TYPE_CHECKING:
    from sc2tune.serving.app import ModelFacts, ServeLayer

log = logging.getLogger(__name__)

#: Addresses reachable from this machine only.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
#: Export types a folder can be served in (the ones llama.cpp computes well on a CPU).
SERVE_DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_k_m")


def check_address(host: str, port: int, api_key: str | None) -> None:
    """Refuse a non-local address without a key, an empty key, a port out of range."""
    if api_key is not None and not api_key.strip():
        raise UserError("--api-key is empty", hint="give a secret string, e.g. --api-key \"$(openssl rand -hex 16)\"")
    if host not in LOCAL_HOSTS and api_key is None:
        raise UserError(f"--host {host} makes the server reachable from other machines, and no --api-key is set",
                        hint="add --api-key KEY (clients send 'Authorization: Bearer KEY'), or keep the default "
                             "--host 127.0.0.1")
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be in 1..65535 (got {port})")


def check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so that a port in use is a clear error before the model loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}",
                            hint="pick another --port, or stop what is listening there") from None


def build_app(model: Path, facts: ModelFacts, *, api_key: str | None, n_ctx: int, n_threads: int | None,
              verbose: bool = False) -> ServeLayer:
    """llama-cpp-python's app over the GGUF file ``model`` (loaded now), behind sc2tune's layer
    (:class:`~sc2tune.serving.app.ServeLayer`; completions answered by :mod:`sc2tune.serving.completion`).

    The settings are built with ``model_validate`` (pydantic-settings reads environment variables only in a
    settings object's constructor): what is served is what the arguments say.
    """
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from sc2tune.serving.app import ServeLayer
    from sc2tune.serving.completion import complete

    model_settings = ModelSettings.model_validate({
        "model": str(model), "model_alias": facts.alias, "n_ctx": n_ctx, "logits_all": False, "verbose": verbose,
        **({"n_threads": n_threads, "n_threads_batch": n_threads} if n_threads else {}),
    })
    server_settings = ServerSettings.model_validate({"api_key": api_key})
    try:
        app = create_app(server_settings=server_settings, model_settings=[model_settings])
    except ValueError as err:  # llama.cpp could not load the file
        raise UserError(f"llama.cpp cannot load {model}: {err}",
                        hint="serve a GGUF file written by `sc2tune export` (or llama.cpp's converter)") from None
    return ServeLayer(app, facts, api_key=api_key, complete=complete)


def serve(
    path: Annotated[str | Path, Help("a .gguf file, or a run / merged / model folder (exported to FOLDER/export/"
                                     "model-DTYPE.gguf first, and reused)", metavar="PATH", positional=True)],
    *,
    host: Annotated[str, Help("address to listen on; any but 127.0.0.1/localhost/::1 needs --api-key")] = "127.0.0.1",
    port: Annotated[int, Help("port to listen on")] = 8000,
    api_key: Annotated[str | None, Help("ask 'Authorization: Bearer KEY' of every request but /health",
                                        metavar="KEY")] = None,
    n_ctx: Annotated[int, Help("context length in tokens, prompt and output together (0: the model's own)")] = 4096,
    threads: Annotated[int | None, Help("CPU threads (default: llama.cpp's choice)")] = None,
    dtype: Annotated[str, Help(f"export type when PATH is a folder: {', '.join(SERVE_DTYPES)}")] = "f16",
    name: Annotated[str | None, Help("the model's name in /v1/models (default: the folder's name, or the GGUF "
                                     "file's stem)")] = None,
    verbose_engine: Annotated[bool, Help("show llama.cpp's own log", flag="--verbose-engine")] = False,
) -> None:
    """Serve PATH until interrupted (Ctrl-C): ``/health``, ``/v1/models``, ``/v1/completions`` (``suffix``: FIM),
    ``/v1/chat/completions`` (models with a chat template), streaming, OpenAI's sampling parameters with the
    ranges of ``sc2tune generate``."""
    check_address(host, port, api_key)
    if dtype not in SERVE_DTYPES:
        raise UserError(f"--dtype {dtype} is not one of {', '.join(SERVE_DTYPES)}")
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1 (got {threads})")
    check_port_free(host, port)
    from sc2tune.export.quantize import require_serve_extra
    from sc2tune.serving.source import gguf_for, read_facts

    require_serve_extra("gguf", "llama_cpp", "uvicorn", "fastapi", "sse_starlette")

    gguf_path = gguf_for(path, dtype=dtype)
    folder_name = Path(path).resolve().name if Path(path).is_dir() else None
    facts = read_facts(gguf_path, alias=name or folder_name, n_ctx=n_ctx)

    import uvicorn

    app = build_app(gguf_path, facts, api_key=api_key, n_ctx=facts.context, n_threads=threads,
                    verbose=verbose_engine)
    where = f"[{host}]" if ":" in host else host
    print(f"sc2tune serve: {facts.alias} ({gguf_path}, {facts.context:,}-token context) on http://{where}:{port}/v1"
          f"{'  (API key required)' if api_key else ''}; Ctrl-C stops", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
