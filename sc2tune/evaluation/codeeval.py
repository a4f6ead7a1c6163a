"""Execution-based scoring of code completions: every sample runs in the sandbox, then pass@k.

``evaluate_code`` judges each (task, completion) pair in its own sandboxed run (see
:mod:`sc2tune.evaluation.sandbox`: the sample's code and the tests run in separate processes, and only
the judge process can report a pass) on a bounded pool of worker threads, each with its worker slot's
warm sandbox (:class:`~sc2tune.evaluation.sandbox.JudgePool`: set up once, a fresh run per sample),
counts ``c`` passing of ``n`` samples per task and averages the unbiased pass@k over tasks.

A run whose verdict was lost (:data:`~sc2tune.evaluation.sandbox.LOST_VERDICT`: the judge exited 0, as
it does only after writing a pass, but no record arrived) is an infrastructure fault, not the sample's:
it is judged again, up to ``_ATTEMPTS`` runs in all. Should every run lose it, the sample's status is
"error" (never "failed"), the warning at the end counts it, and ``attempts`` says how many runs it took.

Every pass@k carries a 95% interval (``ci95``): the percentile bootstrap over tasks of the per-task
pass@k (:mod:`sc2tune.evaluation.intervals`); :func:`pass_at_k_differences` gives the paired difference of
two results on the same tasks.
"""

from __future__ import annotations

import logging
import queue
import signal
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sc2tune.evaluation.intervals import bootstrap_interval, paired_difference
from sc2tune.evaluation.passk import mean_pass_at_k, pass_at_k
from sc2tune.evaluation.problems import Problem, Sample, candidate_program, judge_job
from sc2tune.evaluation.sandbox import LOST_VERDICT, JudgePool, SandboxLimits

log = logging.getLogger(__name__)
_ATTEMPTS = 3  #: runs of one sample at most when its verdict is lost


@dataclass(frozen=True)
class SampleResult:
    """The outcome of one sample."""

    task_id: str
    completion_id: int  #: index of the sample among its task's samples, in file order
    status: str  #: passed | failed | timeout | error
    returncode: int | None
    seconds: float
    error: str  #: why it did not pass: the judge's reason, else the last line of stderr (empty when passed)
    attempts: int = 1  #: runs it took (more than 1 only when a verdict was lost and the sample judged again)


@dataclass(frozen=True)
class CodeEvalResult:
    """pass@k over tasks, per-task counts and every sample's outcome."""

    scores: dict[str, float]  #: {"pass@1": ..., "pass@10": ...}
    per_task: dict[str, dict[str, int]]  #: {task_id: {"n": samples, "c": passing}}
    samples: list[SampleResult]
    isolation: str
    limits: dict
    tasks_without_samples: list[str] = field(default_factory=list)
    ci95: dict[str, list[float]] = field(default_factory=dict)  #: {"pass@1": [lo, hi], ...} over tasks

    def summary(self) -> dict:
        """The one-line JSON object of ``--json``."""
        statuses = Counter(s.status for s in self.samples)
        return {**self.scores, "ci95": self.ci95, "tasks": len(self.per_task), "samples": len(self.samples),
                "status_counts": dict(sorted(statuses.items())),
                "judged_again": sum(s.attempts > 1 for s in self.samples),
                "tasks_without_samples": len(self.tasks_without_samples)}


def per_task_pass_at_k(per_task: dict[str, dict[str, int]], key: str) -> list[float]:
    """The unbiased pass@k of each task (sorted by task id) for ``key`` = ``"pass@k"``: the bootstrap's units."""
    k = int(key.split("@", 1)[1])
    return [pass_at_k(per_task[t]["n"], per_task[t]["c"], k) for t in sorted(per_task)]


def pass_at_k_intervals(per_task: dict[str, dict[str, int]], keys: Sequence[str]) -> dict[str, list[float]]:
    """``{"pass@k": [lo, hi]}``: 95% percentile-bootstrap interval over tasks (seed 0, 1000 resamples)."""
    return {key: bootstrap_interval(per_task_pass_at_k(per_task, key)) for key in keys}


def pass_at_k_differences(a: CodeEvalResult, b: CodeEvalResult) -> dict[str, dict]:
    """``{"pass@k": {"value": a - b, "ci95": [lo, hi]}}`` for every pass@k both report: paired bootstrap
    over the tasks both were scored on (the same problems, e.g. an adapter's samples against the base's)."""
    if set(a.per_task) != set(b.per_task):
        raise ValueError("a paired difference needs both results scored on the same tasks")
    return {key: paired_difference(per_task_pass_at_k(a.per_task, key), per_task_pass_at_k(b.per_task, key))
            for key in a.scores if key in b.scores}


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def _explain(status: str, returncode: int | None, stderr: str, timeout: float, reason: str = "") -> str:
    """One line saying why a sample did not pass (empty when it passed)."""
    if status == "passed":
        return ""
    if status == "timeout":
        return f"timed out after {timeout:g} s"
    if reason:
        detail = _last_line(stderr)
        return reason[:500] + (f" ({detail})" if detail and detail not in reason else "")
    if returncode is not None and returncode > 128:
        try:
            name = signal.Signals(returncode - 128).name
        except ValueError:
            name = f"signal {returncode - 128}"
        return f"killed by {name}" + (f" ({_last_line(stderr)})" if _last_line(stderr) else "")
    return _last_line(stderr) or f"exit status {returncode}"


def evaluate_code(
    problems: dict[str, Problem],
    samples: Sequence[Sample],
    *,
    ks: Sequence[int] = (1, 10, 100),
    limits: SandboxLimits | None = None,
    workers: int = 2,
    show_progress: bool = True,
) -> CodeEvalResult:
    """Run every sample against its task's tests in the sandbox and compute pass@k.

    ``workers`` samples run at once (each in its own process tree). k values larger than the fewest
    samples of any task are left out of ``scores``.
    """
    limits = limits or SandboxLimits()
    judges = JudgePool(limits)
    iso = judges.isolation
    log.info("sandbox: %s", iso.describe())
    slots: queue.Queue[int] = queue.Queue()
    for slot in range(max(1, workers)):
        slots.put(slot)
    index_in_task: Counter[str] = Counter()
    jobs = []
    for sample in samples:
        jobs.append((sample, index_in_task[sample.task_id]))
        index_in_task[sample.task_id] += 1

    def run(sample: Sample, completion_id: int) -> SampleResult:
        problem = problems[sample.task_id]
        for attempt in range(1, _ATTEMPTS + 1):
            slot = slots.get()
            try:
                result = judges.run_judged(candidate_program(problem, sample.completion), judge_job(problem),
                                           slot=slot)
            finally:
                slots.put(slot)
            if result.reason != LOST_VERDICT:
                break
            log.warning("%s sample %d: %s (run %d of %d)", sample.task_id, completion_id, LOST_VERDICT, attempt,
                        _ATTEMPTS)
        error = _explain(result.status, result.returncode, result.stderr_tail, limits.timeout, result.reason)
        return SampleResult(sample.task_id, completion_id, result.status, result.returncode,
                            round(result.seconds, 3), error, attempt)

    results: list[SampleResult] = []
    columns = (TextColumn("executing samples"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with judges, Progress(*columns, disable=not show_progress, transient=True) as progress, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        bar = progress.add_task("samples", total=len(jobs))
        futures = [pool.submit(run, sample, cid) for sample, cid in jobs]
        for future in as_completed(futures):
            results.append(future.result())
            progress.advance(bar)
    results.sort(key=lambda r: (r.task_id, r.completion_id))
    per_task: dict[str, dict[str, int]] = {}
    for r in results:
        entry = per_task.setdefault(r.task_id, {"n": 0, "c": 0})
        entry["n"] += 1
        entry["c"] += int(r.status == "passed")
    scores = mean_pass_at_k({t: (v["n"], v["c"]) for t, v in per_task.items()}, ks)
    skipped = [k for k in ks if f"pass@{k}" not in scores]
    if skipped:
        log.warning("pass@%s left out: some task has fewer samples than k", ",".join(map(str, skipped)))
    errors = [r for r in results if r.status == "error"]
    if errors:
        log.warning("%d sample(s) could not be judged (the sandbox or the problem failed): %s", len(errors), errors[0].error)
    return CodeEvalResult(
        scores=scores, per_task=per_task, samples=results, isolation=iso.describe(),
        limits=asdict(limits), tasks_without_samples=sorted(set(problems) - set(per_task)),
        ci95=pass_at_k_intervals(per_task, list(scores)),
    )
