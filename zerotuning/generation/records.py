"""What scoring a generation split keeps per example, and the split measures derived from it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .degeneration import is_empty, repeats
from .matching import contains_reference, exact_match, pattern_match


# Per-example measure -> the name of its split mean in ``summary()``.
SUMMARY_NAMES = {
    "reference_log_likelihood": "mean_reference_log_likelihood",
    "exact_match": "exact_match",
    "contains": "contains",
    "regex_match": "regex_match",
    "empty": "empty_rate",
    "repeats": "repetition_rate",
    "unfinished": "unfinished_rate",
    "degenerate": "degenerate_rate",
    "continuation_entropy": "mean_continuation_entropy",
    "generated_tokens": "mean_generated_tokens",
}


@dataclass(frozen=True)
class Generations:
    """Greedy answers of one split: text, tokens generated (stop token included), whether a stop token
    ended them, and the mean next-token entropy (nats) over those steps."""

    texts: tuple[str, ...]
    token_counts: np.ndarray
    ended: np.ndarray
    mean_entropy: np.ndarray


@dataclass(frozen=True)
class GenerationScores:
    """Per-example results, in the split's example order; either part may be absent (not computed).

    ``reference_log_likelihood`` [N]: the mean per-token log-probability of the best reference
    (teacher-forced; its end-of-turn token included); ``generations``: the greedy answers.
    """

    example_ids: tuple[str, ...]
    references: tuple[tuple[str, ...], ...]
    patterns: tuple[str, ...]
    reference_log_likelihood: np.ndarray | None = None
    generations: Generations | None = None

    def __len__(self) -> int:
        return len(self.example_ids)

    def per_example(self) -> dict[str, np.ndarray]:
        """Every measure per example (floats; regex NaN where an example has no pattern)."""
        measures: dict[str, np.ndarray] = {}
        if self.reference_log_likelihood is not None:
            measures["reference_log_likelihood"] = self.reference_log_likelihood.astype(np.float64)
        if self.generations is not None:
            texts = self.generations.texts
            empty = np.array([is_empty(text) for text in texts])
            looping = np.array([repeats(text) for text in texts])
            unfinished = ~self.generations.ended.astype(bool)
            measures.update(
                exact_match=np.array([exact_match(t, refs) for t, refs in zip(texts, self.references)], dtype=np.float64),
                contains=np.array([contains_reference(t, refs) for t, refs in zip(texts, self.references)], dtype=np.float64),
                regex_match=np.array([pattern_match(t, p) for t, p in zip(texts, self.patterns)], dtype=np.float64),
                empty=empty.astype(np.float64),
                repeats=looping.astype(np.float64),
                unfinished=unfinished.astype(np.float64),
                degenerate=(empty | looping | unfinished).astype(np.float64),
                continuation_entropy=self.generations.mean_entropy.astype(np.float64),
                generated_tokens=self.generations.token_counts.astype(np.float64),
            )
        return measures

    def mean_reference_log_likelihood(self) -> float:
        if self.reference_log_likelihood is None:
            raise ValueError("these scores hold no reference log-likelihoods (scored without the likelihood pass)")
        return float(self.reference_log_likelihood.mean())

    def mean_continuation_entropy(self) -> float:
        if self.generations is None:
            raise ValueError("these scores hold no generations (scored without generating)")
        return float(self.generations.mean_entropy.mean())

    def summary(self) -> dict:
        """Split means, JSON-ready (regex over the examples that have a pattern; null when none has)."""
        summary: dict = {"examples": len(self)}
        for name, values in self.per_example().items():
            if name == "regex_match":
                has_pattern = ~np.isnan(values)
                summary["regex_examples"] = int(has_pattern.sum())
                summary["regex_match"] = float(values[has_pattern].mean()) if has_pattern.any() else None
            else:
                summary[SUMMARY_NAMES[name]] = float(values.mean())
        return summary
