"""Run the tasks of a TaskQueue until it is empty."""

from __future__ import annotations

import logging
import time

from taskq import TaskQueue

log = logging.getLogger(__name__)


def run_until_empty(queue: TaskQueue, idle_sleep: float = 0.01) -> int:
    """Run tasks until none are left; returns how many succeeded. Failing tasks are retried."""
    done = 0
    while len(queue):
        task = queue.pop_ready()
        if task is None:
            time.sleep(idle_sleep)
            continue
        try:
            task.fn(*task.args)
        except Exception as err:  # a task may raise anything; retry it
            log.warning("task %s failed (attempt %d): %s", task.fn.__name__, task.attempts + 1, err)
            queue.retry(task, err)
        else:
            done += 1
    return done


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    q = TaskQueue(backoff=0.01)
    q.submit(print, "low priority", priority=20)
    q.submit(print, "high priority", priority=1)
    q.submit(print, "later", delay=0.05)
    print("succeeded:", run_until_empty(q))
