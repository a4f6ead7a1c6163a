"""The OpenAI-compatible app: llama-cpp-python's own FastAPI server, wrapped in one ASGI layer of sc2tune's.

``create_app`` (llama-cpp-python 0.3.36) serves ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``
and streaming (server-sent events) on llama.cpp. :class:`ServeLayer` sits in front of it and closes the gaps
a new user meets:

=====================================  ==================================================================
request                                what the layer does
=====================================  ==================================================================
``GET /health``                        200 ``{"status": "ok", "model": ALIAS}`` (the model is loaded
                                       before the app exists); no key needed
any other, with an API key set         401 unless ``Authorization: Bearer KEY``
completions / chat completions         parameters checked and defaults made neutral
                                       (:mod:`sc2tune.serving.params`): out of range is a 400 whose body
                                       names the parameter (``error.param``); the server keeps serving
``n`` = 2                              two requests of one response each, merged (choices 0 and 1; a
                                       stream carries both, one after the other)
completions / chat completions         answered by :mod:`sc2tune.serving.completion` on the same ``Llama``
                                       object under the server's lock: with ``suffix``, StarCoder2's PSM
                                       prompt from token ids (:mod:`sc2tune.serving.fim`); ``max_tokens``
                                       held (llama-cpp-python's routes can run past it to the context's
                                       end); a prompt too long for the context a 400, streamed or not
chat on a model without a template     400 (llama-cpp-python would fall back to Llama-2's format)
=====================================  ==================================================================

Errors have OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from sc2tune.sampling import BadParameter
from sc2tune.serving.params import Checked, check_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COMPLETIONS = ("/v1/completions", "/v1/engines/copilot-codex/completions")
CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class ModelFacts:
    """What the layer knows of the served model: its alias, the server's context length, whether its GGUF
    metadata holds a chat template (``tokenizer.chat_template``)."""

    alias: str
    context: int
    chat_template: bool


def error_body(message: str, param: str | None = None, code: str | None = None,
               kind: str = "invalid_request_error") -> bytes:
    """OpenAI's error object as JSON bytes."""
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}}).encode()


async def respond(send: Send, status: int, body: bytes, content_type: str = "application/json") -> None:
    """A whole response in two ASGI messages."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then waits on the real one (a disconnect)."""
    sent = False

    async def receive_again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_again


#: Answers one checked completion request: ``complete(scope, receive, send, body)``.
Complete = Callable[[Scope, Receive, Send, dict[str, Any]], Awaitable[None]]


class ServeLayer:
    """The ASGI layer in front of llama-cpp-python's app (module doc); ``complete`` answers completions and chat
    completions (:func:`sc2tune.serving.completion.complete`), ``app`` everything else."""

    def __init__(self, app: ASGIApp, facts: ModelFacts, *, api_key: str | None, complete: Complete) -> None:
        self.app, self.facts, self.api_key, self.complete = app, facts, api_key, complete

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path, method = scope["path"], scope["method"]
        if path == "/health" and method in ("GET", "HEAD"):
            return await respond(send, 200, json.dumps({"status": "ok", "model": self.facts.alias}).encode())
        if self.api_key is not None and not self._authorized(scope):
            return await respond(send, 401, error_body(
                "invalid or missing API key: send the header 'Authorization: Bearer KEY' (the server's --api-key)",
                code="invalid_api_key"))
        if method != "POST" or path not in (*COMPLETIONS, CHAT):
            return await self.app(scope, receive, send)
        raw = await read_body(receive)
        try:
            checked = check_request(json.loads(raw or b"null"), chat=path == CHAT, context=self.facts.context)
        except json.JSONDecodeError as err:
            return await respond(send, 400, error_body(f"the request body is not JSON: {err}", "body"))
        except BadParameter as err:
            return await respond(send, 400, error_body(str(err), err.param))
        if path == CHAT and not self.facts.chat_template:
            return await respond(send, 400, error_body(
                f"{self.facts.alias} has no chat template (it was not trained on instructions, or was exported "
                "without one): use /v1/completions", "messages"))
        if checked.n == 1:
            return await self._one(scope, receive, send, checked, 0)
        if checked.stream:
            return await self._stream_several(scope, receive, send, checked)
        return await self._merge_several(scope, receive, send, checked)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    async def _one(self, scope: Scope, receive: Receive, send: Send, checked: Checked, index: int) -> None:
        body = checked.body_for(index)
        await self.complete(scope, replay(json.dumps(body).encode(), receive), send, body)

    async def _merge_several(self, scope: Scope, receive: Receive, send: Send, checked: Checked) -> None:
        """``n`` responses, one request each, merged: choices re-indexed, completion tokens summed."""
        merged: dict[str, Any] | None = None
        for index in range(checked.n):
            status, headers, raw = await _capture(partial(self._one, scope, receive, checked=checked, index=index))
            if status != 200:
                return await _replay_response(send, status, headers, raw)
            part = json.loads(raw)
            for choice in part.get("choices", []):
                choice["index"] = index
            if merged is None:
                merged = part
                continue
            merged["choices"] += part.get("choices", [])
            usage, more = merged.get("usage"), part.get("usage")
            if usage and more:  # the prompt counts once
                usage["completion_tokens"] += more["completion_tokens"]
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        await respond(send, 200, json.dumps(merged).encode())

    async def _stream_several(self, scope: Scope, receive: Receive, send: Send, checked: Checked) -> None:
        """``n`` streams, one after the other, as one: each event's choices re-indexed and given the first
        stream's id; the ``[DONE]`` event only at the end."""
        state: dict[str, Any] = {"started": False, "failed": False, "id": None, "buffer": ""}

        for index in range(checked.n):
            last = index == checked.n - 1

            async def relay(message: Message, index: int = index, last: bool = last) -> None:
                if message["type"] == "http.response.start":
                    if not state["started"]:
                        state["started"], state["failed"] = True, message.get("status", 200) != 200
                        headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
                        await send(message if state["failed"] else {**message, "headers": headers})
                    return
                if message["type"] != "http.response.body" or state["failed"]:  # an error answer goes as it is
                    return await send(message)
                state["buffer"] += message.get("body", b"").decode("utf-8")
                complete, _, state["buffer"] = state["buffer"].rpartition("\n\n")
                events = [event for event in complete.split("\n\n") if complete]
                if not last:  # one [DONE], at the very end
                    events = [event for event in events if event.strip() != "data: [DONE]"]
                out = "".join(_reindex(event, index, state) + "\n\n" for event in events)
                more = message.get("more_body", False) or not last
                if out or not more:
                    await send({"type": "http.response.body", "body": out.encode("utf-8"), "more_body": more})

            await self._one(scope, receive, relay, checked, index)
            if state["failed"]:
                return


def _reindex(event: str, index: int, state: dict[str, Any]) -> str:
    """One server-sent event with its JSON data's choices given ``index`` and the first stream's id."""
    lines = []
    for line in event.split("\n"):
        if line.startswith("data: ") and line[6:].strip() != "[DONE]":
            with contextlib.suppress(json.JSONDecodeError):
                data = json.loads(line[6:])
                state["id"] = state["id"] or data.get("id")
                data["id"] = state["id"]
                for choice in data.get("choices", []):
                    choice["index"] = index
                line = "data: " + json.dumps(data)
        lines.append(line)
    return "\n".join(lines)


async def _capture(run: Callable[[Send], Awaitable[None]]) -> tuple[int, list[Any], bytes]:
    """Run an ASGI call into memory: its status, headers and whole body."""
    start: dict[str, Any] = {}
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await run(keep)
    return int(start.get("status", 500)), list(start.get("headers", [])), b"".join(chunks)


async def _replay_response(send: Send, status: int, headers: list[Any], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
