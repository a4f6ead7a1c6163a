"""What the serving tests share: the engine and client (required test dependencies: a missing one fails, it is
never skipped), the GGUF file (exported once per session), and a real ``sc2tune serve`` process.

The served file is the tiny StarCoder2 (random weights, the real tokenizer) as the model folder of an Alpaca
instruction run, exported to an f32 GGUF by ``sc2tune.export`` (so it has a chat template too). A server is
started per test module (``python -m sc2tune serve``, a free port, one llama.cpp thread) and
waited for on ``/health``; the reference is the same GGUF file run directly in ``llama_cpp.Llama``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from launching import free_port, launch_env

#: The context both the server and the reference Llama get.
N_CTX = 512
#: How long a server may take to load (seconds; a loaded 2-core machine).
START_TIMEOUT = 240


def require(module: str):
    """Import ``module``, a dependency of the test extra: failing (not skipping) when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        pytest.fail(f"{module} is not installed; install the test extra: pip install -e '.[test]'")


@pytest.fixture(scope="session")
def instruct_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an instruction run's model folder (its recipe.yaml: the quickstart Alpaca recipe),
    exported to an f32 GGUF: the metadata carries the run's template as the chat template."""
    import shutil

    import yaml

    require("llama_cpp")
    from launching import REPO

    from sc2tune.export import export_gguf
    from sc2tune.modeling import resolve_model_path

    folder = tmp_path_factory.mktemp("instruct") / "model"
    shutil.copytree(resolve_model_path("sc2tune/tiny-starcoder2"), folder)
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart" / "alpaca.yaml").read_text())
    recipe["data"]["train"] = str(REPO / "data_templates" / "samples" / "instruct.jsonl")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return Path(export_gguf(folder, folder.parent / "instruct-f32.gguf", dtype="f32"))


@dataclass
class Server:
    """A running ``sc2tune serve``: its base URL (``.../v1``), key and log file."""

    url: str
    api_key: str | None
    log: Path
    process: subprocess.Popen

    def get(self, path: str, *, key: str | None = None) -> tuple[int, dict]:
        return self.request("GET", path, None, key=key)

    def request(self, method: str, path: str, body: dict | None, *, key: str | None = None) -> tuple[int, dict]:
        """A plain HTTP request (no client library): status and JSON body."""
        root = self.url.removesuffix("/v1")
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(root + path, data=data, method=method,
                                         headers={"content-type": "application/json",
                                                  **({"authorization": f"Bearer {key}"} if key else {})})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def client(self, key: str | None = "same"):
        openai = require("openai")
        key = self.api_key if key == "same" else key
        return openai.OpenAI(base_url=self.url, api_key=key or "no-key", max_retries=0, timeout=120)


def start_server(gguf: Path, log: Path, *extra: str, api_key: str | None = None) -> Iterator[Server]:
    """Start ``sc2tune serve GGUF`` and wait until ``/health`` answers; stop it afterwards."""
    port = free_port()
    command = [sys.executable, "-m", "sc2tune", "serve", str(gguf), "--port", str(port), "--n-ctx", str(N_CTX),
               "--threads", "1", *(["--api-key", api_key] if api_key else []), *extra]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=launch_env())
    server = Server(f"http://127.0.0.1:{port}/v1", api_key, log, process)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"sc2tune serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if server.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sc2tune serve did not answer /health in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reference_llama(gguf: Path):
    """The same GGUF file in llama.cpp directly, as the server loads it."""
    llama_cpp = require("llama_cpp")
    return llama_cpp.Llama(str(gguf), n_ctx=N_CTX, n_threads=1, n_threads_batch=1, verbose=False)
