"""sc2tune's layer without the engine: a request's parameters as llama-cpp-python receives them (neutral
defaults, OpenAI's and the seed page's names), ``n`` merged, the command's refusals before anything loads."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import httpx
import pytest
from launching import free_port

from sc2tune.sampling import BadParameter
from sc2tune.serving.app import ModelFacts, ServeLayer
from sc2tune.serving.params import check_request

FACTS = ModelFacts("m", 256, chat_template=False)


class Echo:
    """A stand-in for the completion handler: answers a completion whose text is the body it received."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []

    async def __call__(self, scope, receive, send, checked_body=None) -> None:
        message = await receive()
        body = json.loads(message["body"])
        self.bodies.append(body)
        answer = {"id": f"cmpl-{len(self.bodies)}", "choices": [{"text": f"seed={body.get('seed')}", "index": 0}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}
        raw = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": raw, "more_body": False})


def post(layer: ServeLayer, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=layer), base_url="http://t") as client:
            return await client.post(path, json=body, headers=headers or {})

    return asyncio.run(go())


def test_the_engine_gets_neutral_defaults_under_its_own_names():
    inner = Echo()
    layer = ServeLayer(Echo(), FACTS, api_key=None, complete=inner)
    assert post(layer, "/v1/completions", {"prompt": "x"}).status_code == 200
    sent = inner.bodies[-1]
    # llama-cpp-python's own defaults would be repeat_penalty 1.1, top_k 40, min_p 0.05, temperature 0.8, 16 tokens
    assert {k: sent[k] for k in ("repeat_penalty", "top_k", "min_p", "temperature", "top_p", "max_tokens",
                                 "presence_penalty", "frequency_penalty")} == {
        "repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0, "temperature": 0.2, "top_p": 0.95, "max_tokens": 128,
        "presence_penalty": 0.0, "frequency_penalty": 0.0}
    assert "n" not in sent and "seed" not in sent and "repetition_penalty" not in sent
    post(layer, "/v1/completions", {"prompt": "x", "repetition_penalty": 1.3, "min_p": 0.1})
    assert inner.bodies[-1]["repeat_penalty"] == 1.3 and inner.bodies[-1]["min_p"] == 0.1


def test_n_two_is_two_requests_merged():
    inner = Echo()
    layer = ServeLayer(Echo(), FACTS, api_key=None, complete=inner)
    answer = post(layer, "/v1/completions", {"prompt": "x", "n": 2, "seed": 2**32 - 1}).json()
    assert [(c["index"], c["text"]) for c in answer["choices"]] == [(0, f"seed={2**32 - 1}"), (1, "seed=0")]
    assert answer["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}
    assert len(inner.bodies) == 2


def test_bad_requests_are_400s_and_the_key_a_401():
    inner = Echo()
    layer = ServeLayer(inner, FACTS, api_key="k", complete=inner)
    auth = {"authorization": "Bearer k"}
    assert post(layer, "/v1/completions", {"prompt": "x"}).status_code == 401
    assert post(layer, "/v1/completions", {"prompt": "x"}, {"authorization": "Bearer no"}).status_code == 401
    for body, param in (({"prompt": "x", "max_tokens": 257}, "max_tokens"),
                        ({"prompt": "x", "repetition_penalty": 1.2, "repeat_penalty": 1.1}, "repetition_penalty"),
                        ({"prompt": "x", "stream": "yes"}, "stream")):
        answer = post(layer, "/v1/completions", body, auth)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param
    chat = post(layer, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, auth)
    assert chat.status_code == 400 and "no chat template" in chat.json()["error"]["message"]
    assert inner.bodies == []  # nothing reached the engine
    assert post(layer, "/v1/completions", {"prompt": "x"}, auth).status_code == 200


def test_check_request_names_and_chat_limits():
    checked = check_request({"messages": [], "max_completion_tokens": 7, "seed": 3, "n": 2}, chat=True, context=64)
    assert checked.body["max_tokens"] == 7 and checked.n == 2 and checked.body_for(1)["seed"] == 4
    with pytest.raises(BadParameter) as err:
        check_request({"prompt": "x", "suffix": 3}, chat=False, context=64)
    assert err.value.param == "suffix"
    with pytest.raises(BadParameter) as err:
        check_request([1, 2], chat=False, context=64)
    assert err.value.param == "body"
    for body, param in (({"prompt": ["a", "b"]}, "prompt"), ({"prompt": [1, 2]}, "prompt"), ({"prompt": ""}, "prompt"),
                        ({"prompt": "x", "logprobs": 2}, "logprobs")):
        with pytest.raises(BadParameter) as err:
            check_request(body, chat=False, context=64)
        assert err.value.param == param
    assert check_request({"prompt": ["one"]}, chat=False, context=64).body["prompt"] == ["one"]
    assert check_request({"prompt": "", "suffix": "x"}, chat=False, context=64).body["suffix"] == "x"  # FIM


# ---- the command's refusals, before any model is loaded ---------------------------------------------------------

def test_another_address_without_a_key_is_refused(run_cli, tmp_path: Path):
    done = run_cli("serve", str(tmp_path / "none.gguf"), "--host", "0.0.0.0")
    assert done.returncode != 0 and "--api-key" in done.stderr and "0.0.0.0" in done.stderr
    assert "Traceback" not in done.stderr


def test_not_a_gguf_an_empty_key_and_a_busy_port_are_clear_errors(run_cli, tmp_path: Path):
    text = tmp_path / "model.gguf"
    text.write_text("not gguf")
    done = run_cli("serve", str(text), "--port", str(free_port()))
    assert done.returncode != 0 and "is not a GGUF file" in done.stderr and "Traceback" not in done.stderr
    assert run_cli("serve", str(text), "--api-key", " ").returncode != 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = run_cli("serve", str(text), "--port", str(busy.getsockname()[1]))
    assert done.returncode != 0 and "cannot listen on 127.0.0.1" in done.stderr and "Traceback" not in done.stderr

