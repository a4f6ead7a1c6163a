"""95% intervals: percentile bootstrap over units and paired differences, against scipy and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sc2tune.evaluation.codeeval import CodeEvalResult, pass_at_k_differences, pass_at_k_intervals
from sc2tune.evaluation.intervals import bootstrap_interval, paired_difference
from sc2tune.evaluation.report import run_markdown
from sc2tune.evaluation.runeval import RunEvalResult

scipy_stats = pytest.importorskip("scipy.stats")


def _scipy_percentile(*samples: np.ndarray, statistic, paired: bool = False) -> list[float]:
    res = scipy_stats.bootstrap(samples, statistic, n_resamples=20000, method="percentile", paired=paired,
                                confidence_level=0.95, random_state=np.random.default_rng(123), vectorized=False)
    return [res.confidence_interval.low, res.confidence_interval.high]


def test_interval_of_a_binomial_matches_scipy_and_the_normal_approximation() -> None:
    x = np.array([1.0] * 60 + [0.0] * 140)  # 200 problems, 30% pass
    lo, hi = bootstrap_interval(x)
    ref = _scipy_percentile(x, statistic=np.mean)
    assert lo == pytest.approx(ref[0], abs=0.01) and hi == pytest.approx(ref[1], abs=0.01)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 200)  # Wald interval: 0.3 -+ 0.0635
    assert lo == pytest.approx(0.3 - half, abs=0.012) and hi == pytest.approx(0.3 + half, abs=0.012)


def test_interval_of_continuous_scores_matches_scipy() -> None:
    x = np.random.default_rng(7).beta(2, 5, size=150)  # edit similarities in [0, 1]
    lo, hi = bootstrap_interval(x)
    ref = _scipy_percentile(x, statistic=np.mean)
    assert lo == pytest.approx(ref[0], abs=0.006) and hi == pytest.approx(ref[1], abs=0.006)


def test_equal_units_give_a_zero_width_interval_and_the_seed_fixes_it() -> None:
    assert bootstrap_interval([0.25] * 37) == [0.25, 0.25]
    x = list(np.random.default_rng(0).uniform(size=50))
    assert bootstrap_interval(x) == bootstrap_interval(x)
    assert bootstrap_interval(x, seed=1) != bootstrap_interval(x, seed=2)
    with pytest.raises(ValueError):
        bootstrap_interval([])


def test_paired_difference_matches_scipy_and_cancels_shared_variation() -> None:
    rng = np.random.default_rng(3)
    b = rng.uniform(size=120)
    a = np.clip(b + rng.normal(0.05, 0.05, size=120), 0, 1)
    diff = paired_difference(a, b)
    assert diff["value"] == pytest.approx(float(a.mean() - b.mean()))
    ref = _scipy_percentile(a, b, statistic=lambda u, v: np.mean(u) - np.mean(v), paired=True)
    assert diff["ci95"][0] == pytest.approx(ref[0], abs=0.003) and diff["ci95"][1] == pytest.approx(ref[1], abs=0.003)
    # a shift shared by every unit is certain when paired, though the unpaired intervals overlap widely
    shifted = paired_difference(b + 0.1, b)
    assert shifted["value"] == pytest.approx(0.1) and shifted["ci95"] == pytest.approx([0.1, 0.1])
    with pytest.raises(ValueError):
        paired_difference([1.0, 0.0], [1.0])


def _code_result(per_task: dict[str, dict[str, int]], scores: dict[str, float]) -> CodeEvalResult:
    return CodeEvalResult(scores=scores, per_task=per_task, samples=[], isolation="-", limits={},
                          ci95=pass_at_k_intervals(per_task, list(scores)))


def test_pass_at_k_interval_by_hand() -> None:
    # two tasks with n=1: resampled means are 0, 1/2, 1 with chances 1/4, 1/2, 1/4 -> 2.5%..97.5% = [0, 1]
    assert pass_at_k_intervals({"a": {"n": 1, "c": 1}, "b": {"n": 1, "c": 0}}, ["pass@1"]) == {"pass@1": [0.0, 1.0]}
    # every task n=4, c=2: pass@2 = 1 - C(2,2)/C(4,2) = 5/6 for each, so the interval has no width
    assert pass_at_k_intervals({t: {"n": 4, "c": 2} for t in "abc"}, ["pass@2"])["pass@2"] == pytest.approx([5 / 6] * 2)
    adapter = _code_result({t: {"n": 1, "c": 1} for t in "abcd"}, {"pass@1": 1.0})
    base = _code_result({t: {"n": 1, "c": int(t in "ab")} for t in "abcd"}, {"pass@1": 0.5})
    diff = pass_at_k_differences(adapter, base)["pass@1"]
    assert diff["value"] == pytest.approx(0.5) and diff["ci95"][0] >= 0.0 and diff["ci95"][1] <= 1.0


def _infill(em: list[float], es: list[float]) -> dict:
    return {"exact_match": sum(em) / len(em), "edit_similarity": sum(es) / len(es), "count": len(em),
            "per_case": {"exact_match": em, "edit_similarity": es},
            "ci95": {"exact_match": bootstrap_interval(em), "edit_similarity": bootstrap_interval(es)}}


def test_run_summary_keeps_its_keys_and_adds_intervals_and_differences() -> None:
    result = RunEvalResult("run", "fim", 10, models={
        "base": {"loss": 1.5, "perplexity": 4.48, "infill": {"span": _infill([0.0, 1.0, 0.0, 0.0], [0.2, 1.0, 0.4, 0.5])}},
        "adapter": {"loss": 1.2, "perplexity": 3.32, "infill": {"span": _infill([1.0, 1.0, 0.0, 1.0], [1.0, 1.0, 0.6, 1.0])}},
    })
    summary = result.summary()
    base = summary["models"]["base"]
    assert base["loss"] == 1.5 and base["infill_span_exact_match"] == 0.25
    assert base["infill_span_edit_similarity"] == pytest.approx(0.525)
    assert set(base) == {"loss", "perplexity", "infill_span_exact_match", "infill_span_edit_similarity", "ci95"}
    assert set(base["ci95"]) == {"infill_span_exact_match", "infill_span_edit_similarity"}
    diff = summary["differences"]["adapter-base"]
    assert diff["infill_span_exact_match"]["value"] == pytest.approx(0.5)  # 3/4 - 1/4
    # per-hole differences of edit similarity: 0.8, 0, 0.2, 0.5 -> mean 0.375, interval inside [0, 0.8]
    es = diff["infill_span_edit_similarity"]
    assert es["value"] == pytest.approx(0.375) and 0.0 <= es["ci95"][0] <= 0.375 <= es["ci95"][1] <= 0.8
    report = run_markdown(result.to_dict(), {})
    assert "| 95% interval |" in report and "| adapter\\-base | infill\\_span\\_exact\\_match | +0.5000 |" in report
