"""Forked worker processes for the data builders (:mod:`sc2tune.data.chunked`, :mod:`sc2tune.data.stream`).

:func:`workers` gives a ``map(fn, items)`` that runs ``fn`` on ``data.num_proc`` forked processes (in this
process when 1 or unset), each given the job's settings once (read back with :func:`job`). Results come back
in item order, and at most :data:`AHEAD` items per worker are submitted ahead of the one being read (a
pool's own ``map`` would submit, and so read, them all), so memory holds a few items per worker, not the
corpus.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

#: Items in flight per worker.
AHEAD = 2

Map = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]

_JOB: Any = None


def job() -> Any:
    """The settings of the job this process works for (given to :func:`workers`)."""
    assert _JOB is not None
    return _JOB


def _init(settings: Any) -> None:
    global _JOB
    _JOB = settings


@contextlib.contextmanager
def workers(num_proc: int | None, settings: Any) -> Iterator[Map]:
    """The ``map`` of the module doc over ``num_proc`` forked workers whose :func:`job` is ``settings``."""
    if not num_proc or num_proc <= 1:
        _init(settings)
        try:
            yield map
        finally:
            _init(None)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(num_proc, mp_context=context, initializer=_init, initargs=(settings,)) as pool:

        def ordered(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
            pending: deque[Future] = deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= AHEAD * num_proc:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

        yield ordered
