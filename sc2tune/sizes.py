"""Byte sizes written as text, read as the Hugging Face ecosystem reads them.

``"2GB"`` = 2 x 10^9 bytes and ``"2GiB"`` = 2 x 2^30 bytes (likewise KB/MB/TB = 10^3/10^6/10^12 and
KiB/MiB/TiB = 2^10/2^20/2^40), as in transformers' ``max_shard_size`` and accelerate's ``max_memory`` (``convert_file_size_to_int``),
computed here so that ``plan --gpu-memory`` does not import accelerate (and torch with it). The unit is
case-insensitive (accelerate would read a lower-case ``gb`` as gigabits) and required: a bare ``80`` is
refused rather than guessed.
"""

from __future__ import annotations

import re

from sc2tune.errors import UserError

_SIZE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KMGT]?)(I?)B\s*", re.IGNORECASE)


def parse_size(text: str | int, *, what: str = "size") -> int:
    """``"2GB"`` -> 2_000_000_000, ``"1.5GiB"`` -> 1_610_612_736; an int is already bytes.

    ``what`` names the setting in the error (e.g. ``--gpu-memory``); bad text is a :class:`UserError`.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text <= 0:
            raise UserError(f"{what} {text} is not a positive number of bytes")
        return text
    match = _SIZE.fullmatch(str(text))
    if not match or float(match.group(1)) <= 0:
        raise UserError(f"{what} '{text}' is not a size",
                        hint="write a number and a unit: 24GB (10^9 bytes each), 24GiB (2^30), 500MB or 512MiB")
    number, prefix, binary = float(match.group(1)), match.group(2).upper(), bool(match.group(3))
    power = "KMGT".index(prefix) + 1 if prefix else 0
    return int(number * (1024 if binary else 1000) ** power)
