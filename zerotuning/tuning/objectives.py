"""What the gamma search maximises on the calibration split.

A key is a tuple compared lexicographically, larger is better. With ``calibration="label_bias"``
(the default) a candidate is judged as it will be used: after label-bias calibration fitted on the
calibration split, measured out of fold (``zerotuning.evaluation.out_of_fold``) so that the fit
never sees the examples it is judged on:
- supervised: (out-of-fold calibrated accuracy, mean out-of-fold log-probability of the right
  answer after label bias and a temperature) - the likelihood breaks the frequent accuracy ties;
- unsupervised: (-mean entropy of the out-of-fold label-bias-corrected answer distribution,);
  label bias needs no labels. With ``entropy_over="vocab"`` the full next-token entropy is used
  as it is (calibration does not act on the vocabulary).
With ``calibration="none"``, the objectives of the uncalibrated model:
- supervised: (accuracy, mean full-vocabulary log-probability of the right answer);
- unsupervised: (-mean entropy,) of the answer distribution (``"answers"``) or of the full
  next-token distribution (``"vocab"``).
Labels are never used by the unsupervised objectives, and the inputs are the calibration split's,
never the test split's. ``per_example`` gives the first key component per example (its mean), which
the selection's standard errors are computed from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation.out_of_fold import DEFAULT_FOLDS, out_of_fold_label_bias
from ..scoring.distributions import entropy_from_log_probs
from ..scoring.records import ScoredSplit

ENTROPY_CHOICES = ("answers", "vocab")
CALIBRATIONS = ("label_bias", "none")


@dataclass(frozen=True)
class SupervisedObjective:
    calibration: str = "none"
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    name: str = "supervised"

    @property
    def metric(self) -> str:
        return "accuracy" if self.calibration == "none" else "oof_label_bias_accuracy"

    @property
    def min_examples(self) -> int:
        """The fewest examples a key can be computed on: one per fold when calibrated out of fold."""
        return 1 if self.calibration == "none" else self.folds

    def per_example(self, scored: ScoredSplit) -> np.ndarray:
        if self.calibration == "none":
            return scored.correct().astype(np.float64)
        calibrated = out_of_fold_label_bias(scored, self.folds, self.seed)
        return (calibrated.argmax(axis=-1) == scored.answers).astype(np.float64)

    def key(self, scored: ScoredSplit) -> tuple[float, ...]:
        if self.calibration == "none":
            return (scored.accuracy(), scored.mean_answer_log_likelihood())
        calibrated = out_of_fold_label_bias(scored, self.folds, self.seed, temperature=True)
        rows = np.arange(len(scored))
        accuracy = float((out_of_fold_label_bias(scored, self.folds, self.seed).argmax(axis=-1) == scored.answers).mean())
        return (accuracy, float(calibrated[rows, scored.answers].mean()))

    def metrics(self, scored: ScoredSplit) -> dict:
        """The key's components by name (those not already in ``ScoredSplit.summary``)."""
        if self.calibration == "none":
            return {}
        accuracy, log_likelihood = self.key(scored)
        return {"oof_label_bias_accuracy": accuracy, "oof_calibrated_log_likelihood": log_likelihood}

    def to_json(self) -> dict:
        key = ["accuracy", "mean_answer_log_likelihood"] if self.calibration == "none" else ["oof_label_bias_accuracy", "oof_calibrated_log_likelihood"]
        return {"name": self.name, "key": key, "maximise": True, "calibration": self.calibration, "folds": self.folds, "fold_seed": self.seed}


@dataclass(frozen=True)
class UnsupervisedObjective:
    entropy_over: str = "answers"
    calibration: str = "none"
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    name: str = "unsupervised"

    def __post_init__(self) -> None:
        if self.entropy_over not in ENTROPY_CHOICES:
            raise ValueError(f"entropy_over: got {self.entropy_over!r}, expected one of {ENTROPY_CHOICES}")

    @property
    def calibrated(self) -> bool:
        return self.calibration != "none" and self.entropy_over == "answers"

    @property
    def min_examples(self) -> int:
        """The fewest examples a key can be computed on: one per fold when calibrated out of fold."""
        return self.folds if self.calibrated else 1

    @property
    def metric(self) -> str:
        if self.calibrated:
            return "oof_label_bias_answer_entropy"
        return "mean_answer_entropy" if self.entropy_over == "answers" else "mean_vocab_entropy"

    def per_example(self, scored: ScoredSplit) -> np.ndarray:
        if self.calibrated:
            return -entropy_from_log_probs(out_of_fold_label_bias(scored, self.folds, self.seed))
        if self.entropy_over == "answers":
            return -entropy_from_log_probs(scored.answer_log_probs())
        return -np.asarray(scored.vocab_entropy, dtype=np.float64)

    def key(self, scored: ScoredSplit) -> tuple[float, ...]:
        return (float(self.per_example(scored).mean()),)

    def metrics(self, scored: ScoredSplit) -> dict:
        return {self.metric: -self.key(scored)[0]} if self.calibrated else {}

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "key": [f"-{self.metric}"],
            "maximise": True,
            "entropy_over": self.entropy_over,
            "calibration": self.calibration if self.entropy_over == "answers" else "none",
            "folds": self.folds,
            "fold_seed": self.seed,
        }


Objective = SupervisedObjective | UnsupervisedObjective


def make_objective(name: str, entropy_over: str = "answers", calibration: str = "none", folds: int = DEFAULT_FOLDS, seed: int = 0) -> Objective:
    """``"supervised"`` or ``"unsupervised"`` (then ``entropy_over`` picks the entropy that drives the search);
    ``calibration`` ``"label_bias"`` judges candidates after out-of-fold label-bias calibration."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration: got {calibration!r}, expected one of {CALIBRATIONS}")
    if name == "supervised":
        return SupervisedObjective(calibration=calibration, folds=folds, seed=seed)
    if name == "unsupervised":
        return UnsupervisedObjective(entropy_over=entropy_over, calibration=calibration, folds=folds, seed=seed)
    raise ValueError(f"objective: got {name!r}, expected 'supervised' or 'unsupervised'")
