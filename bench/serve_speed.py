"""Benchmark: generated tokens per second of ``sc2tune serve`` (llama.cpp, over HTTP through the ``openai``
client) against ``sc2tune generate``'s path (transformers ``generate`` in sc2tune's ``generate_responses``), on
the same prompts with the same greedy settings, in one run.

Setup (not measured): a random StarCoder2 (``--hidden`` 768, ``--layers`` 8, heads of 64 / 2 KV heads, MLP 4x, the
real 49152 vocabulary and tokenizer, tied embeddings: about 90M parameters) saved in float32, and its GGUF
written by ``sc2tune export`` (``--dtype``, default f32: the same numbers on both sides).

Measured, each side a whole process with ``--threads`` threads (default 1: the box's 2 cores are shared):

* serve: ``python -m sc2tune serve GGUF --threads T``; one warm-up request, then each prompt as one
  ``client.completions.create(prompt=..., max_tokens=N, temperature=0)``; tokens = the response's
  ``usage.completion_tokens``; time = wall time around the requests (HTTP and JSON included);
* generate: one process loads the folder (``sc2tune.generation.load_for_inference``), warms up on one prompt,
  then ``generate_responses(lm, prompt, Sampling(max_new_tokens=N, temperature=0))`` per prompt; tokens = the
  new tokens of each ``model.generate`` call (counted by a wrapper); time = wall time around the calls.

llama-cpp-python 0.3.36 does not stop at ``max_tokens`` while the text so far ends in an incomplete UTF-8
character (a random model emits such byte-piece tokens in runs), so the serve side can generate more than N
tokens per prompt; every token it generates is counted.

Printed: both rates, serve/generate, and how many greedy continuations are identical on the two sides.
Run: ``python bench/serve_speed.py [--prompts 8] [--max-tokens 64] [--threads 1] [--dtype f32]``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Code prompts (left-to-right completion).
PROMPTS = [
    "def fibonacci(n):\n    ", "import os\nimport sys\n\n\ndef main():\n", "class Stack:\n    def __init__(self):\n",
    "def read_json(path):\n    with open(path) as f:\n", "for i in range(10):\n    if i % 2 == 0:\n",
    "def quicksort(xs):\n    if len(xs) <= 1:\n", "# parse the arguments\nparser = argparse.ArgumentParser()\n",
    "async def fetch(session, url):\n", "def is_prime(n: int) -> bool:\n", "SELECT name, count(*) FROM users\n",
    "const add = (a, b) =>", "fn main() {\n    let x =",
]

SETUP = textwrap.dedent("""
    import sys, torch
    from transformers import Starcoder2Config, Starcoder2ForCausalLM
    from sc2tune.tiny import load_bundled_tokenizer
    out, hidden, layers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    config = Starcoder2Config(vocab_size=49152, hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=2,
                              max_position_embeddings=4096, bos_token_id=0, eos_token_id=0,
                              tie_word_embeddings=True)
    torch.manual_seed(0)
    model = Starcoder2ForCausalLM(config).eval()
    model.save_pretrained(out)
    load_bundled_tokenizer().save_pretrained(out)
    from sc2tune.export import export_gguf
    export_gguf(out, sys.argv[4], dtype=sys.argv[5])
""")

GENERATE = textwrap.dedent("""
    import json, sys, time, torch
    folder, max_tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    prompts = json.loads(sys.argv[4])
    torch.set_num_threads(threads)
    from sc2tune.generation import Sampling, generate_responses, load_for_inference
    lm = load_for_inference(folder, dtype="float32")
    sampling = Sampling(max_new_tokens=max_tokens, temperature=0)
    generate_responses(lm, prompts[0], sampling)  # warm-up
    counts, model_generate = [], lm.model.generate

    def counting_generate(*args, **kwargs):  # the bench's own count of the tokens generate made
        out = model_generate(*args, **kwargs)
        counts.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    lm.model.generate = counting_generate
    texts = []
    start = time.perf_counter()
    for prompt in prompts:
        texts.append(generate_responses(lm, prompt, sampling)[0])
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"tokens": sum(counts), "seconds": seconds, "texts": texts}))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(threads: int) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


def run_serve(gguf: Path, prompts: list[str], max_tokens: int, threads: int, log: Path) -> dict:
    """Start ``sc2tune serve``, time the prompts through the openai client, stop it."""
    from openai import OpenAI

    port = free_port()
    command = [sys.executable, "-m", "sc2tune", "serve", str(gguf), "--port", str(port), "--threads", str(threads),
               "--n-ctx", "2048"]
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env(threads))
    try:
        deadline = time.monotonic() + 600
        while True:
            if server.poll() is not None:
                raise SystemExit(f"sc2tune serve exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"sc2tune serve did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
        ask = {"model": "bench", "max_tokens": max_tokens, "temperature": 0}
        client.completions.create(prompt=prompts[0], **ask)  # warm-up
        texts, tokens = [], 0
        start = time.perf_counter()
        for prompt in prompts:
            answer = client.completions.create(prompt=prompt, **ask)
            texts.append(answer.choices[0].text)
            tokens += answer.usage.completion_tokens
        return {"tokens": tokens, "seconds": time.perf_counter() - start, "texts": texts}
    finally:
        server.terminate()
        server.wait(timeout=60)


def run_generate(folder: Path, prompts: list[str], max_tokens: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-c", GENERATE, str(folder), str(max_tokens), str(threads),
                           json.dumps(prompts)], capture_output=True, text=True, env=env(threads))
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"the generate side failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help=f"prompts (at most {len(PROMPTS)})")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--dtype", default="f32", help="GGUF type of the served file (f32, f16, q8_0, ...)")
    parser.add_argument("--show-differences", action="store_true", help="print the continuations that differ")
    args = parser.parse_args()
    prompts = PROMPTS[: args.prompts]
    with tempfile.TemporaryDirectory(prefix="serve-speed-") as tmp:
        folder, gguf = Path(tmp) / "model", Path(tmp) / f"model-{args.dtype}.gguf"
        print(f"setup: random StarCoder2 hidden {args.hidden} x {args.layers} layers, GGUF {args.dtype} ...",
              flush=True)
        subprocess.run([sys.executable, "-c", SETUP, str(folder), str(args.hidden), str(args.layers), str(gguf),
                        args.dtype], check=True, env=env(args.threads), capture_output=True)
        served = run_serve(gguf, prompts, args.max_tokens, args.threads, Path(tmp) / "serve.log")
        generated = run_generate(folder, prompts, args.max_tokens, args.threads)
    same = sum(a == b for a, b in zip(served["texts"], generated["texts"], strict=True))
    rate = {name: r["tokens"] / r["seconds"] for name, r in (("serve", served), ("generate", generated))}
    print(f"{len(prompts)} prompts x {args.max_tokens} tokens, greedy, {args.threads} thread(s), GGUF {args.dtype}")
    print(f"  sc2tune serve (llama.cpp, HTTP, openai client): {served['tokens']:5d} tokens in "
          f"{served['seconds']:6.1f} s = {rate['serve']:7.1f} tokens/s")
    print(f"  sc2tune generate (transformers):                {generated['tokens']:5d} tokens in "
          f"{generated['seconds']:6.1f} s = {rate['generate']:7.1f} tokens/s")
    print(f"  ratio serve / generate: {rate['serve'] / rate['generate']:.2f}x")
    print(f"  identical greedy continuations: {same}/{len(prompts)}")
    if args.show_differences:
        for prompt, a, b in zip(prompts, served["texts"], generated["texts"], strict=True):
            if a != b:
                print(f"  {prompt!r}:\n    serve    {a!r}\n    generate {b!r}")


if __name__ == "__main__":
    main()
