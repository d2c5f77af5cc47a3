"""What the gamma search maximises on a generation task's calibration split (plugs into Levels 0-2).

- supervised: the mean per-token log-likelihood of the best reference answer (teacher-forced,
  one pass per batch; no generation needed);
- unsupervised: minus the mean next-token entropy over the model's own greedy answer (references
  unused; one greedy generation of the calibration split per candidate).

Each objective says which ``measures`` it needs, so calibration candidates cost only those.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import GenerationScores


@dataclass(frozen=True)
class ReferenceLikelihoodObjective:
    name: str = "supervised"
    metric: str = "mean_reference_log_likelihood"
    measures: tuple[str, ...] = ("likelihood",)

    def key(self, scored: GenerationScores) -> tuple[float, ...]:
        return (scored.mean_reference_log_likelihood(),)

    def metrics(self, scored: GenerationScores) -> dict:
        return {}  # the key is a summary field already; nothing is calibrated

    def to_json(self) -> dict:
        return {"name": self.name, "key": [self.metric], "maximise": True, "measures": list(self.measures)}


@dataclass(frozen=True)
class ContinuationEntropyObjective:
    name: str = "unsupervised"
    metric: str = "mean_continuation_entropy"
    measures: tuple[str, ...] = ("generation",)

    def key(self, scored: GenerationScores) -> tuple[float, ...]:
        return (-scored.mean_continuation_entropy(),)

    def metrics(self, scored: GenerationScores) -> dict:
        return {}

    def to_json(self) -> dict:
        return {"name": self.name, "key": [f"-{self.metric}"], "maximise": True, "measures": list(self.measures)}


GenerationObjective = ReferenceLikelihoodObjective | ContinuationEntropyObjective


def make_generation_objective(name: str) -> GenerationObjective:
    if name == "supervised":
        return ReferenceLikelihoodObjective()
    if name == "unsupervised":
        return ContinuationEntropyObjective()
    raise ValueError(f"objective: got {name!r}, expected 'supervised' or 'unsupervised'")
