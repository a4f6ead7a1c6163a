"""Progress bars for the data pipeline (rich, on stderr), or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import datasets


class Progress:
    """Rich progress bars, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), transient=True, console=Console(stderr=True))

    def task(self, description: str, total: int | None = None) -> Callable[..., None] | None:
        if self.bar is None:
            return None
        task_id = self.bar.add_task(description, total=total)

        def advance(n: int, total: int | None = None) -> None:
            if total is not None:
                self.bar.update(task_id, total=total)
            self.bar.advance(task_id, n)

        return advance

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        was = datasets.is_progress_bar_enabled()
        if self.bar is None:
            datasets.disable_progress_bars()
            try:
                yield
            finally:
                if was:
                    datasets.enable_progress_bars()
            return
        with self.bar:
            yield
