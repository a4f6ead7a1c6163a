"""Evaluation: execution-based pass@k in a sandbox, held-out loss, FIM infilling, classification metrics,
and reports (JSON, Markdown, PNG plots). ``sc2tune eval`` is a thin layer over these functions."""

from sc2tune.evaluation.codeeval import CodeEvalResult, SampleResult, evaluate_code, pass_at_k_differences
from sc2tune.evaluation.intervals import bootstrap_interval, paired_difference
from sc2tune.evaluation.passk import mean_pass_at_k, pass_at_k
from sc2tune.evaluation.problems import (
    BENCHMARKS,
    Problem,
    Sample,
    load_problems,
    load_samples,
    make_fim_problems,
    write_problems,
)
from sc2tune.evaluation.sandbox import Isolation, SandboxLimits, isolation, run_program

__all__ = [
    "BENCHMARKS",
    "CodeEvalResult",
    "Isolation",
    "Problem",
    "Sample",
    "SampleResult",
    "SandboxLimits",
    "bootstrap_interval",
    "evaluate_code",
    "isolation",
    "load_problems",
    "load_samples",
    "make_fim_problems",
    "mean_pass_at_k",
    "paired_difference",
    "pass_at_k",
    "pass_at_k_differences",
    "run_program",
    "write_problems",
]
