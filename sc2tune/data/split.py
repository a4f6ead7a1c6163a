"""The eval split of ``data.eval`` as a fraction: which examples (or whole repositories) are held out.

    n_eval = max(1, round(n * fraction));  held out = the first n_eval of a permutation of 0..n-1 drawn
    with numpy's default_rng(train.seed); train = the rest; both kept in source order.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from sc2tune.errors import DataError

T = TypeVar("T")


def split_fraction(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, eval indices) as the module doc draws them, each sorted (source order kept)."""
    n_eval = max(1, round(n * fraction))
    if n_eval >= n:
        raise DataError(f"data.eval: {fraction} of {n} example(s) leaves nothing to train on",
                        hint="add data, lower data.eval, or set data.eval: null")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_eval:]), np.sort(order[:n_eval])


def split_documents(docs: list[T], fraction: float, seed: int, *, by_repo: bool) -> tuple[list[T], list[T]]:
    """(train, eval) documents (anything with a ``repo``) for ``data.eval`` as a fraction: the
    :func:`split_fraction` of the documents, or with ``by_repo`` of the sorted repository names (whole
    repositories held out). Each keeps the documents' order."""
    if by_repo:
        repos = sorted({doc.repo or "" for doc in docs})
        _, ev = split_fraction(len(repos), fraction, seed)
        held = {repos[i] for i in ev}
        return [x for x in docs if (x.repo or "") not in held], [x for x in docs if (x.repo or "") in held]
    tr, ev = split_fraction(len(docs), fraction, seed)
    return [docs[i] for i in tr], [docs[i] for i in ev]
