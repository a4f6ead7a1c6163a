"""Readability scores."""

from textstats.tokens import sentences, syllables, words


def flesch_reading_ease(text: str) -> float:
    """Flesch reading ease: 206.835 - 1.015 (words / sentences) - 84.6 (syllables / words).

    Higher is easier; 60-70 is plain English. Returns 0.0 for text without words.
    """
    ws = words(text)
    if not ws:
        return 0.0
    n_sentences = max(1, len(sentences(text)))
    n_syllables = sum(syllables(w) for w in ws)
    return 206.835 - 1.015 * (len(ws) / n_sentences) - 84.6 * (n_syllables / len(ws))
