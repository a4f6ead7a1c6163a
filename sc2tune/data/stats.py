"""Statistics of a built data set: what went in, what came out, what was cut or skipped.

``packing_efficiency`` is real tokens / (rows x max_length): the share of a full-length row that holds
data. With packing on it measures the packer; with packing off it measures how much of max_length the
examples fill (the collator pads each batch only to its longest row, so the batch-level padding is lower).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sc2tune.errors import DataError


@dataclass
class SplitStats:
    """Counts for one split (train or eval)."""

    examples: int = 0
    """Source examples (records, documents, files) that produced rows."""
    windows: int = 0
    """Token sequences before packing (FIM: windows of long documents; else = examples kept)."""
    tokens: int = 0
    """Real (non-pad) tokens in the rows."""
    trained_tokens: int = 0
    """Tokens whose label is not -100 (causal) or examples (classify). A sequence's first token is never
    counted: its label is -100 (sc2tune.data.packing), so this is exactly the number of targets the
    shifted loss sees."""
    rows: int = 0
    """Rows of the data set (packed rows when packing is on)."""
    packing_efficiency: float = 0.0
    """tokens / (rows * max_length)."""
    truncated: int = 0
    """Examples cut at max_length."""
    dropped_tokens: int = 0
    """Tokens lost to truncation or to dropped examples."""
    dropped_examples: int = 0
    """Examples left out entirely (e.g. an instruction prompt that alone fills max_length)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (of a DataStats: the ``sc2tune data --json`` object, ``eval`` nested)."""
        return asdict(self)


@dataclass
class DataStats(SplitStats):
    """Statistics of a :class:`~sc2tune.data.prepare.DataBundle` (the train split at top level)."""

    task: str = ""
    max_length: int = 0
    packing: bool = False
    skipped_files: int = 0
    """Code-folder entries (files, folders) and empty FIM records skipped: the sum of ``skipped``."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Skipped entries by reason (the reasons listed in sc2tune.data.code_folder; ``empty`` for records too)."""
    fim: dict[str, int] = field(default_factory=lambda: {"psm": 0, "spm": 0, "plain": 0, "fallback": 0})
    """FIM: windows rendered PSM, SPM or plain; ``fallback`` = FIM draws rendered plain because the
    re-tokenised parts would not fit max_length (counted in ``plain`` too)."""
    class_counts: dict[str, int] | None = None
    """classify: training examples per label name."""
    eval: SplitStats | None = None
    """The same counts for the eval split (None without one)."""
    eval_class_counts: dict[str, int] | None = None


def no_rows_error(stats: DataStats, train: str | list[str]) -> DataError:
    """The error for a training split that produced no rows, saying why when the counts tell (every
    example dropped for length) and which recipe key changes it."""
    where = f"data.train produced no training rows ({train})"
    if stats.dropped_examples and not stats.examples:
        return DataError(
            f"{where}: all {stats.dropped_examples} example(s) were dropped for length: each one's prompt alone "
            f"fills data.max_length ({stats.max_length} tokens), leaving no room for a response",
            hint=f"raise data.max_length above {stats.max_length} (the longest response is cut to fit, "
            "counted as truncated), or shorten the prompts / data.template; `sc2tune data RECIPE` shows the counts",
        )
    return DataError(where, hint="check data.max_length and the records (see `sc2tune data RECIPE`)")
