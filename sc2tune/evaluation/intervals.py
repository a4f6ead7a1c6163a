"""95% intervals for benchmark means: percentile bootstrap over units, paired for differences.

A score reported by ``eval code`` (pass@k) or ``eval RUN`` (infilling exact match, edit similarity) is a
mean over units ``x_1..x_n`` (problems, or held-out documents). Its interval is the **percentile
bootstrap** (Efron 1979): draw ``B`` resamples of ``n`` unit indices with replacement from
``numpy.random.default_rng(seed)``, take the mean of each, and report the ``(1 - level) / 2`` and
``(1 + level) / 2`` quantiles of those ``B`` means (numpy's linear interpolation). Defaults:
``B = 1000``, ``seed = 0``, ``level = 0.95``; the same inputs always give the same interval.

The difference of two models scored on the same units, ``d = mean(a) - mean(b)``, gets a **paired**
interval: the same resampled indices are applied to both, i.e. the bootstrap runs over the per-unit
differences ``a_i - b_i``, so the variation shared by both models (an easy problem is easy for both)
cancels. An interval that excludes 0 means the difference is unlikely to be resampling noise.

What it does not cover: the randomness of sampling the completions themselves beyond what pass@k's
unbiased estimator averages, and a choice of problems other than the benchmark's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
_CHUNK = 1 << 22  #: index draws per block, so 1000 resamples of 6000 units stay a few MiB


def bootstrap_interval(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> list[float]:
    """``[lo, hi]``: percentile-bootstrap interval of the mean of ``values`` (see the module docstring)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"need a non-empty list of unit scores, got shape {x.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    rng = np.random.default_rng(seed)
    n = x.size
    per_block = max(1, _CHUNK // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, per_block):
        count = min(per_block, resamples - start)
        means[start:start + count] = x[rng.integers(0, n, size=(count, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    # a constant score has a zero-width interval; clip rounding noise of the means to the observed range
    return [float(max(lo, x.min())), float(min(hi, x.max()))]


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0,
                      level: float = LEVEL) -> dict[str, float | list[float]]:
    """``{"value": mean(a) - mean(b), "ci95": [lo, hi]}`` over units scored by both (paired bootstrap)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired scores need the same units: {x.shape} against {y.shape}")
    d = x - y
    return {"value": float(d.mean()), "ci95": bootstrap_interval(d, resamples=resamples, seed=seed, level=level)}
