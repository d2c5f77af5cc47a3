"""What the gamma search maximises on the calibration split.

A key is a tuple compared lexicographically, larger is better:
- supervised: (accuracy, mean log-likelihood of the right answer) - the likelihood breaks the
  frequent accuracy ties on a few hundred examples;
- unsupervised: (-mean entropy,) of the answer distribution over the offered answers
  (``entropy_over="answers"``) or of the full next-token distribution (``"vocab"``). Both
  entropies are always computed and reported; this choice only says which one drives the search.
  Labels are not used, and the inputs are the calibration split's, never the test split's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..scoring.records import ScoredSplit

ENTROPY_CHOICES = ("answers", "vocab")


@dataclass(frozen=True)
class SupervisedObjective:
    name: str = "supervised"
    metric: str = "accuracy"

    def key(self, scored: ScoredSplit) -> tuple[float, ...]:
        return (scored.accuracy(), scored.mean_answer_log_likelihood())

    def to_json(self) -> dict:
        return {"name": self.name, "key": ["accuracy", "mean_answer_log_likelihood"], "maximise": True}


@dataclass(frozen=True)
class UnsupervisedObjective:
    entropy_over: str = "answers"
    name: str = "unsupervised"

    def __post_init__(self) -> None:
        if self.entropy_over not in ENTROPY_CHOICES:
            raise ValueError(f"entropy_over: got {self.entropy_over!r}, expected one of {ENTROPY_CHOICES}")

    @property
    def metric(self) -> str:
        return "mean_answer_entropy" if self.entropy_over == "answers" else "mean_vocab_entropy"

    def key(self, scored: ScoredSplit) -> tuple[float, ...]:
        entropy = scored.mean_answer_entropy() if self.entropy_over == "answers" else scored.mean_vocab_entropy()
        return (-entropy,)

    def to_json(self) -> dict:
        return {"name": self.name, "key": [f"-{self.metric}"], "maximise": True, "entropy_over": self.entropy_over}


Objective = SupervisedObjective | UnsupervisedObjective


def make_objective(name: str, entropy_over: str = "answers") -> Objective:
    """``"supervised"`` or ``"unsupervised"`` (then ``entropy_over`` picks the entropy that drives the search)."""
    if name == "supervised":
        return SupervisedObjective()
    if name == "unsupervised":
        return UnsupervisedObjective(entropy_over=entropy_over)
    raise ValueError(f"objective: got {name!r}, expected 'supervised' or 'unsupervised'")
