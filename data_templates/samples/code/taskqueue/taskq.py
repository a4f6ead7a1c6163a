"""A priority task queue with retries."""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(order=True)
class Task:
    priority: int
    seq: int
    run_at: float = field(compare=False)
    fn: Callable[..., Any] = field(compare=False)
    args: tuple = field(default=(), compare=False)
    attempts: int = field(default=0, compare=False)


class TaskQueue:
    """Tasks run lowest priority number first, in submission order within a priority."""

    def __init__(self, max_attempts: int = 3, backoff: float = 0.5) -> None:
        self._heap: list[Task] = []
        self._counter = itertools.count()
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.failed: list[tuple[Task, BaseException]] = []

    def submit(self, fn: Callable[..., Any], *args: Any, priority: int = 10, delay: float = 0.0) -> None:
        task = Task(priority, next(self._counter), time.monotonic() + delay, fn, args)
        heapq.heappush(self._heap, task)

    def __len__(self) -> int:
        return len(self._heap)

    def pop_ready(self, now: float | None = None) -> Task | None:
        """The next task whose time has come, or None."""
        now = time.monotonic() if now is None else now
        waiting = []
        task = None
        while self._heap:
            candidate = heapq.heappop(self._heap)
            if candidate.run_at <= now:
                task = candidate
                break
            waiting.append(candidate)
        for t in waiting:
            heapq.heappush(self._heap, t)
        return task

    def retry(self, task: Task, error: BaseException) -> None:
        task.attempts += 1
        if task.attempts >= self.max_attempts:
            self.failed.append((task, error))
            return
        task.run_at = time.monotonic() + self.backoff * 2 ** (task.attempts - 1)
        heapq.heappush(self._heap, task)
