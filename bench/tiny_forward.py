"""Forward latency of the built-in tiny StarCoder2 as sc2tune loads it vs transformers' own load of the same folder.

    python bench/tiny_forward.py [--repeats 20] [--threads 1]

Both models are loaded in this process (float32, sdpa, CPU) from the folder sc2tune materialises the tiny
model into; each forward is one short prompt (13 tokens) without gradients, after one warm-up call. Prints the median
seconds per forward of each and their ratio (sc2tune / transformers). Goal: a median under 1 s (the tiny model
must stay cheap enough for the unit tests that run it), and a ratio near 1.0 (sc2tune's loading adds nothing
to the forward). On a shared machine the absolute figure swings with the load; the ratio is steadier.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from sc2tune.modeling import ModelSource, load_model, load_tokenizer, resolve_model_path
from sc2tune.recipe import TINY_MODEL

PROMPT = "def add(a, b):\n    return a + b\n"


def median_seconds(model: torch.nn.Module, ids: torch.Tensor, repeats: int) -> float:
    """Median wall seconds of ``model(ids)`` over ``repeats`` calls, after one warm-up call."""
    times = []
    with torch.no_grad():
        model(ids)
        for _ in range(repeats):
            start = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spec = ModelSource(dtype="float32")
    tokenizer = load_tokenizer(spec)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    ours = load_model(spec, pad_token_id=tokenizer.pad_token_id).eval()
    theirs = AutoModelForCausalLM.from_pretrained(resolve_model_path(TINY_MODEL), dtype=torch.float32,
                                                  attn_implementation="sdpa").eval()
    # alternate the two, so a burst of load on the shared machine hits both alike
    a, b = [], []
    for _ in range(3):
        a.append(median_seconds(ours, ids, args.repeats))
        b.append(median_seconds(theirs, ids, args.repeats))
    sc2, hf = min(a), min(b)
    print(f"tiny forward ({ids.shape[1]} tokens, {args.threads} thread(s)): sc2tune {sc2 * 1e3:.1f} ms, "
          f"transformers {hf * 1e3:.1f} ms, ratio {sc2 / hf:.2f}x; goal < 1000 ms: {'met' if sc2 < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
