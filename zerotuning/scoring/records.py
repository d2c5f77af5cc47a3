"""What one scoring pass keeps per example, and the split-level metrics derived from it.

Everything the tuning objectives, statistics and calibration baselines need is here, so none of
them costs another forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .distributions import entropy_from_log_probs, masked_log_softmax


@dataclass(frozen=True)
class ScoredSplit:
    """Per-example outputs at the answer position, in the split's example order.

    ``answer_logits`` [N, C]: per answer, the log-sum-exp of the model's logits of its forms' first
    tokens (with one form, that token's logit), so ``answer_logits - vocab_logsumexp`` is the log
    of the answer's probability mass at the answer position; ``choice_mask`` [N, C]
    marks the answers an example offers (multiple-choice items can have fewer options).
    ``vocab_logsumexp`` and ``vocab_entropy`` [N] describe the full next-token distribution;
    ``greedy_tokens`` [N] is its argmax and ``greedy_answers`` [N] the answer that token names
    (-1: unparseable, the paper's "invalid" answer).
    """

    example_ids: tuple[str, ...]
    answers: np.ndarray
    choice_mask: np.ndarray
    answer_logits: np.ndarray
    vocab_logsumexp: np.ndarray
    vocab_entropy: np.ndarray
    greedy_tokens: np.ndarray
    greedy_answers: np.ndarray

    def __len__(self) -> int:
        return len(self.example_ids)

    def take(self, indices: np.ndarray) -> "ScoredSplit":
        """The examples at ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64)
        return ScoredSplit(
            example_ids=tuple(self.example_ids[i] for i in indices),
            answers=self.answers[indices],
            choice_mask=self.choice_mask[indices],
            answer_logits=self.answer_logits[indices],
            vocab_logsumexp=self.vocab_logsumexp[indices],
            vocab_entropy=self.vocab_entropy[indices],
            greedy_tokens=self.greedy_tokens[indices],
            greedy_answers=self.greedy_answers[indices],
        )

    @classmethod
    def concatenate(cls, parts: list["ScoredSplit"]) -> "ScoredSplit":
        """The examples of ``parts`` one after the other."""
        return cls(
            example_ids=tuple(i for part in parts for i in part.example_ids),
            **{name: np.concatenate([getattr(part, name) for part in parts]) for name in (
                "answers", "choice_mask", "answer_logits", "vocab_logsumexp", "vocab_entropy", "greedy_tokens", "greedy_answers")},
        )

    def answer_log_probs(self) -> np.ndarray:
        """[N, C] log-probabilities renormalised over the offered answers (the answer distribution)."""
        return masked_log_softmax(self.answer_logits, self.choice_mask)

    def vocab_log_probs(self) -> np.ndarray:
        """[N, C] log of each answer's probability mass (its forms' first tokens) under the full-vocabulary distribution."""
        return np.where(self.choice_mask, self.answer_logits.astype(np.float64) - self.vocab_logsumexp[:, None], -np.inf)

    def predictions(self) -> np.ndarray:
        """The most likely offered answer per example."""
        return self.answer_log_probs().argmax(axis=-1)

    def correct(self) -> np.ndarray:
        return self.predictions() == self.answers

    def greedy_correct(self) -> np.ndarray:
        return self.greedy_answers == self.answers

    def accuracy(self) -> float:
        return float(self.correct().mean())

    def mean_answer_log_likelihood(self) -> float:
        """Mean full-vocabulary log-probability (mass of its forms) of the right answer (the supervised tie-breaker)."""
        return float(self.vocab_log_probs()[np.arange(len(self)), self.answers].mean())

    def mean_answer_entropy(self) -> float:
        """Mean entropy (nats) of the answer distribution over the offered answers."""
        return float(entropy_from_log_probs(self.answer_log_probs()).mean())

    def mean_vocab_entropy(self) -> float:
        """Mean entropy (nats) of the full next-token distribution at the answer position."""
        return float(self.vocab_entropy.mean())

    def summary(self) -> dict:
        """Split-level metrics, JSON-ready."""
        answer_mass = np.exp(self.vocab_log_probs()).sum(axis=-1)
        return {
            "examples": len(self),
            "accuracy": self.accuracy(),
            "greedy_accuracy": float(self.greedy_correct().mean()),
            "invalid_rate": float((self.greedy_answers < 0).mean()),
            "mean_answer_log_likelihood": self.mean_answer_log_likelihood(),
            "mean_answer_entropy": self.mean_answer_entropy(),
            "mean_vocab_entropy": self.mean_vocab_entropy(),
            "mean_answer_mass": float(answer_mass.mean()),
        }
