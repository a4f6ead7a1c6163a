"""``/v1/completions`` and ``/v1/chat/completions``, answered on llama-cpp-python's own pieces (its request
models, its lock over the loaded ``Llama``, its server-sent-event publisher), a completion's prompt given as
token ids:

* with a ``suffix``: StarCoder2's PSM prompt (:func:`sc2tune.serving.fim.fim_prompt_ids`), where
  llama-cpp-python 0.3.36 would put token 0 for all three FIM markers;
* without: the prompt's tokens as llama-cpp-python's route makes them (special tokens read as such, BOS only
  if the model's metadata asks for one);
* chat: the messages rendered by the model's chat template, as llama-cpp-python's chat handler renders them.

Both hold ``max_tokens`` (:class:`TokenBudget`): llama-cpp-python 0.3.36 skips its length check while the text
ends in an incomplete UTF-8 character, so a model repeating a byte-piece token generates until the context is
full and the request fails (a 500). The budget stops generation after ``max_tokens`` tokens all the same
(the answer's ``finish_reason`` is then "stop"). A prompt of ``n_ctx`` tokens or more is a 400 naming its
length and the context, streamed or not (checked before a stream starts: llama-cpp-python's would be an empty
200).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

from sc2tune.errors import UserError
from sc2tune.serving.app import CHAT, Receive, Scope, Send, error_body, respond

#: Fields of a completion request llama-cpp-python's route leaves out of the ``Llama`` call (as its route does).
NOT_FOR_LLAMA = {"n", "best_of", "logit_bias_type", "user", "min_tokens"}


class TokenBudget:
    """A llama-cpp-python stopping criterion: stop once ``max_tokens`` tokens follow the ``prompt_length``
    prompt tokens. ``Llama.generate`` asks it after sampling each token, with the evaluated ids so far (the
    prompt and every generated token but the newest), so it answers True when the newest token would be
    number ``max_tokens + 1``: ``len(ids) >= prompt_length + max_tokens``."""

    def __init__(self, prompt_length: int, max_tokens: int) -> None:
        self.limit = prompt_length + max_tokens

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        return len(input_ids) >= self.limit


def prompt_ids(llama: Any, prompt: str, suffix: str | None) -> list[int]:
    """The prompt's token ids (module doc)."""
    from sc2tune.serving.fim import fim_prompt_ids

    if suffix is not None:
        return fim_prompt_ids(llama, prompt, suffix)
    return list(llama.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))


def _held_completion(llama: Any, ids: list[int], max_tokens: int, stopping_criteria: Any = None,
                     **kwargs: Any) -> Any:
    """``llama.create_completion`` on ``ids`` within the token budget; a prompt that leaves no room in the
    context is a ValueError naming both (raised here, before a stream's lazy generator is made)."""
    import llama_cpp

    if len(ids) >= llama.n_ctx():
        raise ValueError(f"the prompt is {len(ids)} tokens, and the context holds {llama.n_ctx()} (prompt and "
                         "output together): shorten the prompt, or serve with a larger --n-ctx")
    budget = llama_cpp.StoppingCriteriaList([*(stopping_criteria or []), TokenBudget(len(ids), max_tokens)])
    return llama.create_completion(prompt=ids, max_tokens=max_tokens, stopping_criteria=budget, **kwargs)


def _complete(llama: Any, *, prompt: str | list[str], suffix: str | None, max_tokens: int, **kwargs: Any) -> Any:
    """A completion on the prompt's ids (module doc), within the token budget."""
    ids = prompt_ids(llama, prompt if isinstance(prompt, str) else "".join(prompt[:1]), suffix)
    return _held_completion(llama, ids, max_tokens, **kwargs)


class _HeldLlama:
    """The ``Llama`` as its chat handler sees it: everything its own but ``create_completion`` (the handler's
    one call with the rendered prompt's ids), which holds the budget as :func:`_complete` does."""

    def __init__(self, llama: Any, max_tokens: int) -> None:
        self._llama, self._max_tokens = llama, max_tokens

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llama, name)

    def create_completion(self, prompt: list[int], max_tokens: int | None = None, **kwargs: Any) -> Any:
        return _held_completion(self._llama, list(prompt), self._max_tokens, **kwargs)


def _chat(llama: Any, *, max_tokens: int, **kwargs: Any) -> Any:
    """``Llama.create_chat_completion`` (its chat handler, template and stop token) over :class:`_HeldLlama`."""
    return type(llama).create_chat_completion(_HeldLlama(llama, max_tokens), max_tokens=max_tokens, **kwargs)


async def complete(scope: Scope, receive: Receive, send: Send, body: dict[str, Any]) -> None:
    """Answer one checked completion or chat body (one response: :mod:`sc2tune.serving.app` runs ``n``)."""
    import anyio
    from fastapi.responses import JSONResponse
    from llama_cpp.server.app import get_event_publisher, get_llama_proxy, prepare_request_resources
    from llama_cpp.server.types import CreateChatCompletionRequest, CreateCompletionRequest
    from pydantic import ValidationError
    from sse_starlette.sse import EventSourceResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request

    chat = scope["path"] == CHAT
    try:
        request_model = (CreateChatCompletionRequest if chat else CreateCompletionRequest).model_validate(body)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(part) for part in first.get("loc", ())) or None
        return await respond(send, 422, error_body(f"{param}: {first.get('msg')}", param))
    kwargs = request_model.model_dump(exclude=NOT_FOR_LLAMA)
    call = _chat if chat else partial(_complete, prompt=kwargs.pop("prompt"), suffix=kwargs.pop("suffix"))
    try:  # a stream is checked here too (its generator made and dropped), before its 200 is sent
        async with contextlib.asynccontextmanager(get_llama_proxy)() as proxy:
            prepared = dict(kwargs) if request_model.stream else kwargs  # the publisher prepares the stream's own
            llama = prepare_request_resources(request_model, proxy, request_model.model, prepared)
            result = await run_in_threadpool(call, llama, **prepared)
    except (UserError, ValueError) as err:  # the prompt's length, a chat template's own refusal
        return await respond(send, 400, error_body(str(err), "messages" if chat else "prompt"))
    if request_model.stream:
        send_chan, recv_chan = anyio.create_memory_object_stream(10)
        response: Any = EventSourceResponse(recv_chan, sep="\n", data_sender_callable=partial(
            get_event_publisher, request=Request(scope, receive), inner_send_chan=send_chan, body=request_model,
            body_model=request_model.model, llama_call=call, kwargs=kwargs))
        return await response(scope, receive, send)
    await JSONResponse(result)(scope, receive, send)
