"""Counting words and sentences."""

from collections import Counter

from textstats.tokens import sentences, words


def word_count(text: str) -> int:
    return len(words(text))


def sentence_count(text: str) -> int:
    return len(sentences(text))


def word_frequencies(text: str, top: int | None = None) -> list[tuple[str, int]]:
    """(word, count) pairs, most frequent first; ties in alphabetical order."""
    counts = Counter(words(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return ranked if top is None else ranked[:top]
