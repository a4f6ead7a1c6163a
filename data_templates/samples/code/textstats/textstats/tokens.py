"""Splitting text into words and sentences."""

import re

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, apostrophes kept inside words."""
    return [w.lower() for w in _WORD.findall(text)]


def sentences(text: str) -> list[str]:
    """The sentences of ``text``: pieces ending in '.', '!' or '?' (the last may have no end mark)."""
    parts = [p.strip() for p in _SENTENCE_END.split(text)]
    return [p for p in parts if p]


def syllables(word: str) -> int:
    """A rough syllable count: groups of vowels, a silent final 'e' removed, at least one."""
    word = word.lower()
    groups = re.findall(r"[aeiouy]+", word)
    count = len(groups)
    if word.endswith("e") and not word.endswith("le") and count > 1:
        count -= 1
    return max(1, count)
