"""Judge-free checks of a generated answer against its references: exact match, contains, a regular expression."""

from __future__ import annotations

import re
import unicodedata

_EDGE_PUNCTUATION = " \t\n.,;:!?\"'`()[]{}"


def normalise(text: str) -> str:
    """Case and accents folded ("Bogotá" is "bogota"), whitespace runs collapsed, punctuation and quotes
    around the answer dropped."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    unaccented = "".join(character for character in decomposed if not unicodedata.combining(character))
    return " ".join(unaccented.split()).strip(_EDGE_PUNCTUATION)


def exact_match(generation: str, references: tuple[str, ...]) -> bool:
    """The normalised answer equals some normalised reference."""
    answer = normalise(generation)
    return any(answer == normalise(reference) for reference in references)


def contains_reference(generation: str, references: tuple[str, ...]) -> bool:
    """Some normalised reference appears in the normalised answer as whole words ("7" is not in "17")."""
    answer = normalise(generation)
    return any(re.search(rf"(?<!\w){re.escape(normalise(reference))}(?!\w)", answer) for reference in references if normalise(reference))


def pattern_match(generation: str, pattern: str) -> float:
    """1.0 when ``pattern`` is found in the answer as generated (``re.search``), 0.0 when not, NaN when there is no pattern."""
    if not pattern:
        return float("nan")
    return float(re.search(pattern, generation) is not None)
