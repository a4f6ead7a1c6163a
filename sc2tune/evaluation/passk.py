"""The unbiased pass@k estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

For one task with ``n`` samples of which ``c`` pass, the probability that at least one of ``k`` samples
drawn without replacement passes is::

    pass@k = 1 - C(n - c, k) / C(n, k)

computed without large binomials as the product::

    C(n - c, k) / C(n, k) = prod_{i = n - c + 1}^{n} (1 - k / i)      (and pass@k = 1 when n - c < k)

The benchmark score is the mean over tasks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from sc2tune.errors import UserError


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one task with ``n`` samples, ``c`` of them correct (needs ``1 <= k <= n``)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict[str, float]:
    """``{"pass@k": mean over tasks}`` from ``{task_id: (n, c)}``, for every k no larger than the fewest
    samples of any task (a k above that is left out, as the estimator is undefined for it)."""
    if not counts:
        raise UserError("no tasks to score", hint="check that the samples' task_id values match the problems")
    smallest = min(n for n, _ in counts.values())
    result: dict[str, float] = {}
    for k in sorted(set(ks)):
        if k < 1:
            raise UserError(f"--k values must be positive integers, got {k}")
        if k > smallest:
            continue
        result[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)
    return result
