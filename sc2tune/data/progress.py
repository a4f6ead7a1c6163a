"""Progress bars for the data pipeline (rich, on stderr), or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import datasets


class Progress:
    """Rich progress bars, or nothing (then ``datasets``' own bars are off too while it runs)."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True, console=Console(stderr=True))

    def task(self, description: str, total: int | None = None) -> Callable[[int], None]:
        """``advance(n)`` of a new bar (a no-op without bars)."""
        bar = self.bar
        if bar is None:
            return lambda n: None
        task_id = bar.add_task(description, total=total)
        return lambda n: bar.advance(task_id, n)

    def running(self) -> contextlib.AbstractContextManager[object]:
        """The bars shown while it runs."""
        return self.bar if self.bar is not None else quiet_datasets()


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """``datasets``' progress bars off while it runs, then as they were."""
    was = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was:
            datasets.enable_progress_bars()
