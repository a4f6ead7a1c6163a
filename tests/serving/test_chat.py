"""``/v1/chat/completions`` of an instruction run: the chat template from the GGUF metadata prompts the model
exactly as the run's Alpaca template rendered a training record (the answer equals llama.cpp run directly on
that rendering); a system message is the record's input; streaming equals non-streaming. One server, no key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sc2tune.data.templates import load_template

from .conftest import Server, reference_llama, start_server

#: What the server sends llama.cpp when a request names no sampling parameter but temperature 0.
NEUTRAL = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0, "top_p": 0.95}


@pytest.fixture(scope="module")
def server(instruct_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from start_server(instruct_gguf, tmp_path_factory.mktemp("serve") / "serve.log")


@pytest.mark.parametrize("system", [None, "[3, 1, 2]"])
def test_chat_prompts_as_the_run_was_trained(server: Server, instruct_gguf: Path, system: str | None):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "Sort the list."}]
    answer = server.client().chat.completions.create(model="m", messages=messages, max_tokens=12, temperature=0)
    prompt = load_template("alpaca").render_prompt({"instruction": "Sort the list.", "input": system or ""})
    expected = reference_llama(instruct_gguf)(prompt, max_tokens=12, temperature=0, stop=["<|endoftext|>"],
                                              **NEUTRAL)["choices"][0]["text"]
    assert answer.choices[0].message.content == expected


def test_chat_streaming_equals_non_streaming(server: Server):
    client = server.client()
    kwargs = {"model": "m", "messages": [{"role": "user", "content": "Add two numbers."}], "max_tokens": 10,
              "temperature": 0}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    parts = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(stream=True, **kwargs)
             if chunk.choices]
    assert "".join(parts) == whole
