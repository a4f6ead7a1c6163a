"""A git revision of this repository checked out beside it, for benchmarks that compare with a baseline."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checked_out(revision: str, folder: Path) -> Iterator[Path]:
    """``revision`` in ``folder`` (``git worktree add --detach``), removed again on the way out."""
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=REPO, check=True,
                   capture_output=True)
    try:
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, check=False,
                       capture_output=True)
