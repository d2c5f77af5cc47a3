"""Degenerate outputs: an empty answer, a loop of repeated words, or no end of turn within the token budget."""

from __future__ import annotations

from collections import Counter

REPEAT_NGRAM = 2  # words per n-gram
REPEAT_COUNT = 3  # an n-gram seen this often is a loop ("7 7 7 7", "is the answer is the answer is the")


def is_empty(generation: str) -> bool:
    return not generation.strip()


def repeats(generation: str, n: int = REPEAT_NGRAM, count: int = REPEAT_COUNT) -> bool:
    """Some word ``n``-gram occurs at least ``count`` times."""
    words = generation.split()
    grams = Counter(tuple(words[index : index + n]) for index in range(len(words) - n + 1))
    return bool(grams) and max(grams.values()) >= count


def definition() -> dict:
    """What the rates count, for the results file."""
    return {
        "empty": "the answer is empty or whitespace",
        "repeats": f"some {REPEAT_NGRAM}-word sequence occurs {REPEAT_COUNT} or more times in the answer",
        "unfinished": "no end-of-turn (stop) token within the generation budget",
        "degenerate": "any of the three",
    }
