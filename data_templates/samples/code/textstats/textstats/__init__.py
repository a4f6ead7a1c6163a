"""Small text statistics: words, sentences, readability."""

from textstats.counts import sentence_count, word_count, word_frequencies
from textstats.readability import flesch_reading_ease

__all__ = ["flesch_reading_ease", "sentence_count", "word_count", "word_frequencies"]
