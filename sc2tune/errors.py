"""User-facing errors.

Every mistake a user can make (a bad recipe, a missing file, an adapter for another model) raises a
:class:`UserError`. The CLI prints its message without a traceback and exits with its ``exit_code``;
the Python API lets it propagate so callers can catch it.
"""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; the message says what, where and what to do."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class RecipeError(UserError):
    """A recipe (YAML file or override) that does not validate. Exit status 2."""

    exit_code = 2


class DataError(UserError):
    """A data source that cannot be read or does not have the records the task needs."""

    exit_code = 2


class DiskFullError(UserError):
    """A write failed because the file system is full (or over quota); nothing half-written is kept. Exit 1."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a full disk: ``ENOSPC`` / ``EDQUOT``, also when a library
    re-raised it as another type (``torch.save`` reports a failed write as a ``RuntimeError``)."""
    import errno

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if "No space left on device" in text or "Disk quota exceeded" in text or "file write failed" in text:
            return True
        current = current.__cause__ or current.__context__
    return False
