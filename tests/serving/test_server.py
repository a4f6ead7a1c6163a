"""A real ``sc2tune serve`` over the tiny model's GGUF (exported as an Alpaca instruction run: its metadata holds
the chat template), driven by the ``openai`` client: what it answers equals the same file run directly in
``llama_cpp.Llama`` (greedy, and seeded sampling), FIM is StarCoder2's PSM prompt from token ids, chat prompts
as the run's template rendered training records, streaming equals non-streaming, out-of-range parameters are
400s naming the parameter (and the server keeps serving), and the API key is enforced. One server for the
module (the refusals that need no engine are in test_layer.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sc2tune.data.templates import load_template

from .conftest import N_CTX, Server, reference_llama, require, start_server

openai = require("openai")
pytestmark = pytest.mark.slow  # a server process per module (about 25 s with the export, on a loaded 2-core box)

KEY = "test-key-123"
MODEL = "instruct-f32"  # the GGUF file's stem
PROMPTS = ["def add(a, b):\n    return", "import os\nimport"]
#: What the server promises when a request names none of them: no repeat penalty, top-k and min-p off.
NEUTRAL = {"repeat_penalty": 1.0, "top_k": 0, "min_p": 0.0, "top_p": 0.95}


@pytest.fixture(scope="module")
def server(instruct_gguf: Path, tmp_path_factory: pytest.TempPathFactory):
    yield from start_server(instruct_gguf, tmp_path_factory.mktemp("serve") / "serve.log", api_key=KEY)


@pytest.fixture(scope="module")
def llama(instruct_gguf: Path):
    return reference_llama(instruct_gguf)


def test_health_models_and_the_api_key(server: Server):
    assert server.get("/health") == (200, {"status": "ok", "model": MODEL})  # no key needed
    status, body = server.get("/v1/models")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert server.get("/v1/models", key="wrong")[0] == 401
    status, body = server.get("/v1/models", key=KEY)
    assert status == 200 and [m["id"] for m in body["data"]] == [MODEL]
    with pytest.raises(openai.AuthenticationError):
        server.client(key="wrong").completions.create(model=MODEL, prompt="x", max_tokens=2)
    assert server.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 401


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_equals_llama_cpp_with_neutral_defaults(server: Server, llama, prompt: str):
    answer = server.client().completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0)
    expected = llama(prompt, max_tokens=16, temperature=0, **NEUTRAL)["choices"][0]["text"]
    assert answer.choices[0].text == expected
    # the seed page's name for llama.cpp's repeat penalty is honoured (and changes the answer here)
    penalised = server.client().completions.create(model=MODEL, prompt=prompt, max_tokens=16, temperature=0,
                                                   extra_body={"repetition_penalty": 1.5})
    assert penalised.choices[0].text == llama(prompt, max_tokens=16, temperature=0, **{
        **NEUTRAL, "repeat_penalty": 1.5})["choices"][0]["text"] != expected


def test_fim_is_starcoder2_psm_from_token_ids(server: Server, llama, tokenizer):
    prefix, suffix = "def area(r):\n    return ", "\n\nprint(area(2))\n"
    ids = ([tokenizer.convert_tokens_to_ids("<fim_prefix>")]
           + tokenizer(prefix, add_special_tokens=False)["input_ids"]
           + [tokenizer.convert_tokens_to_ids("<fim_suffix>")]
           + tokenizer(suffix, add_special_tokens=False)["input_ids"]
           + [tokenizer.convert_tokens_to_ids("<fim_middle>")])
    assert ids[0] == 1 and 3 in ids and ids[-1] == 2  # StarCoder2's ids, from the tokenizer by name
    answer = server.client().completions.create(model=MODEL, prompt=prefix, suffix=suffix, max_tokens=16,
                                                temperature=0)
    expected = llama(ids, max_tokens=16, temperature=0, **NEUTRAL)["choices"][0]["text"]
    assert answer.choices[0].text == expected
    # llama-cpp-python's own suffix path (token 0 for all three markers) prompts something else
    assert llama(prefix, suffix=suffix, max_tokens=16, temperature=0, **NEUTRAL)["choices"][0]["text"] != expected


def test_max_tokens_is_held_where_llama_cpp_python_runs_past_it(server: Server, llama):
    """The random model repeats a byte-piece token (half a UTF-8 character) after this prompt: llama-cpp-python
    skips its length check while the text ends mid-character, and runs past max_tokens (to the context's end
    when the run does not stop)."""
    direct = llama("def add(a, b):", max_tokens=8, temperature=0, **NEUTRAL)
    assert direct["usage"]["completion_tokens"] > 8  # the gap, in llama-cpp-python itself
    client = server.client()
    answer = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8, temperature=0)
    assert answer.usage.completion_tokens == 8
    assert direct["choices"][0]["text"].startswith(answer.choices[0].text)
    streamed = client.completions.create(model=MODEL, prompt="def add(a, b):", max_tokens=8, temperature=0,
                                         stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == answer.choices[0].text


def test_a_prompt_longer_than_the_context_is_a_400_streamed_or_not(server: Server, tokenizer):
    prompt = " x" * (N_CTX + 88)
    length = len(tokenizer(prompt)["input_ids"])  # the tokenizer the model was trained with (no BOS added)
    assert length > N_CTX
    client = server.client()
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, stream=stream)
        assert err.value.body["param"] == "prompt", stream
        message = err.value.body["message"]  # the prompt's length and the context, as llama.cpp's own check says
        assert str(length) in message and str(N_CTX) in message, (stream, message)
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=0).choices[0].text


def test_chat_max_tokens_is_held_where_llama_cpp_python_runs_past_it(server: Server, llama, tokenizer):
    """A logit bias on a UTF-8 lead byte (the byte-level piece of 0xE2) makes every token half a character:
    llama-cpp-python's chat runs to the context's end and fails; the server stops after max_tokens."""
    lead_byte = str(tokenizer.convert_tokens_to_ids("\u00e2"))  # GPT-2's byte-to-unicode map: 0xE2 is 'â'
    kwargs = {"messages": [{"role": "user", "content": "Add two numbers."}], "max_tokens": 6, "temperature": 0,
              "logit_bias": {lead_byte: 100.0}}
    with pytest.raises(RuntimeError):  # llama_decode fails once the context is full: the gap, in llama-cpp-python
        llama.create_chat_completion(**kwargs, **NEUTRAL)
    answer = server.client().chat.completions.create(model=MODEL, **kwargs)
    assert answer.usage.completion_tokens == 6 and answer.choices[0].finish_reason == "stop"
    parts = [chunk.choices[0].delta.content or "" for chunk in server.client().chat.completions.create(
        model=MODEL, stream=True, **kwargs) if chunk.choices]
    assert "".join(parts) == (answer.choices[0].message.content or "")


def test_streaming_equals_non_streaming(server: Server):
    client = server.client()
    for extra in ({}, {"suffix": "\n    return x\n"}):
        kwargs = {"model": MODEL, "prompt": "def f(x):\n", "max_tokens": 12, "temperature": 0, **extra}
        whole = client.completions.create(**kwargs).choices[0].text
        parts = [chunk.choices[0].text for chunk in client.completions.create(stream=True, **kwargs)]
        assert len(parts) > 1 and "".join(parts) == whole


def test_n_two_is_two_seeded_responses(server: Server, llama):
    client = server.client()
    kwargs = {"model": MODEL, "prompt": "x = ", "max_tokens": 10, "temperature": 1.0, "seed": 11}
    answer = client.completions.create(n=2, **kwargs)
    texts = [c.text for c in sorted(answer.choices, key=lambda c: c.index)]
    assert [c.index for c in answer.choices] == [0, 1]
    expected = [llama("x = ", max_tokens=10, temperature=1.0, seed=seed, **NEUTRAL)["choices"][0]["text"]
                for seed in (11, 12)]  # response i uses seed + i
    assert texts == expected and texts[0] != texts[1]
    streamed = {0: "", 1: ""}
    for chunk in client.completions.create(n=2, stream=True, **kwargs):
        for choice in chunk.choices:
            streamed[choice.index] += choice.text
    assert [streamed[0], streamed[1]] == texts


BAD = [
    ({"temperature": 200}, "temperature"), ({"top_p": 0}, "top_p"), ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": N_CTX + 1}, "max_tokens"), ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -3}, "frequency_penalty"), ({"n": 3}, "n"), ({"seed": -1}, "seed"),
    ({"stop": [str(i) for i in range(17)]}, "stop"),
    ({"extra_body": {"top_k": -1}}, "top_k"), ({"extra_body": {"repetition_penalty": 0}}, "repetition_penalty"),
]


@pytest.mark.parametrize(("bad", "param"), BAD, ids=[p for _, p in BAD])
def test_a_parameter_out_of_range_is_a_400_naming_it_and_the_server_keeps_serving(server: Server, bad, param):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=MODEL, prompt="x", **bad)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param and param in err.value.body["message"]
    assert client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature=0).choices[0].text


@pytest.mark.parametrize("system", [None, "[3, 1, 2]"])
def test_chat_prompts_as_the_run_was_trained(server: Server, llama, system: str | None):
    """The chat template (GGUF metadata) renders [system], user as Alpaca renders {instruction, input}."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "Sort the list."}]
    answer = server.client().chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
    prompt = load_template("alpaca").render_prompt({"instruction": "Sort the list.", "input": system or ""})
    expected = llama(prompt, max_tokens=12, temperature=0, stop=["<|endoftext|>"], **NEUTRAL)["choices"][0]["text"]
    assert answer.choices[0].message.content == expected


def test_chat_streaming_equals_non_streaming(server: Server):
    client = server.client()
    kwargs = {"model": MODEL, "messages": [{"role": "user", "content": "Add two numbers."}], "max_tokens": 10,
              "temperature": 0}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    parts = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(stream=True, **kwargs)
             if chunk.choices]
    assert "".join(parts) == whole
