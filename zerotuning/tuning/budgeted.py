"""The default search: successive halving over a candidate family within a fraction of the published protocol's cost.

The published protocol costs ``1 + num_heads + 7`` passes over the calibration split (the baseline,
one probe per head index, a 7-point grid). With ``budget = 0.25`` this search may score at most a
quarter of that, in example-equivalents (examples scored / calibration examples), the baseline
included:

1. the candidates (``candidate_family``: a gamma grid on every tunable head, and two gammas on the
   early and on the late half of the tunable layers) are scored on a seeded prefix of the
   calibration split; the best third (by the objective on that prefix) go on to a prefix three
   times as long, and so on until the last rung, which is the whole split (``plan_halving`` picks
   the first prefix length, and drops the lowest-priority candidates if the budget needs it);
2. every example is scored once per candidate: a candidate promoted to a longer prefix is scored
   on the new examples only (``PrefixScores``), and the baseline's scores (all gammas 1) are reused;
3. among the finalists and the baseline, on the whole split, the one-standard-error rule picks
   the simplest candidate (the baseline first, then fewer heads, then gamma nearer 1) whose
   objective is within one standard error (of its per-example difference to the best) of the best.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..profile import Profile
from ..scoring.cost import CostLedger
from ..scoring.records import ScoredSplit
from .candidates import CandidateSpace, Head, profile_key
from .objectives import Objective
from .search import Candidate
from .tuner import LevelResult

BUDGETED = "budgeted"
ALL_HEADS_GAMMAS = (0.5, 2.0, 0.25, 1.5, 0.75, 3.0, 1.25, 4.0)  # priority order: dropped from the end
HALF_LAYER_GAMMAS = (0.5, 2.0)
ETA = 3
MIN_PREFIX = 16
WHOLE_SPLIT_SHARE = 0.8  # a prefix this close to the whole split is the whole split

ScoreSubset = Callable[[Profile, np.ndarray, str], ScoredSplit]


def published_protocol_passes(num_heads: int) -> int:
    """Passes over the calibration split of the published recipe: baseline + one probe per head index + a 7-point grid."""
    return 1 + num_heads + 7


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate of the family: ``gamma`` on ``heads`` (None: every tunable head)."""

    name: str
    gamma: float
    heads: tuple[Head, ...] | None

    def profile(self, space: CandidateSpace) -> Profile:
        return space.uniform(self.gamma) if self.heads is None else space.for_heads(self.gamma, list(self.heads))

    def head_count(self, space: CandidateSpace) -> int:
        return len(space.layers) * space.num_heads if self.heads is None else len(self.heads)

    def complexity(self, space: CandidateSpace) -> tuple[float, float]:
        """Smaller is simpler: the share of heads touched, then |log gamma|; the baseline is (0, 0)."""
        if self.gamma == 1.0:
            return (0.0, 0.0)
        return (self.head_count(space) / (len(space.layers) * space.num_heads), abs(math.log(self.gamma)))


NEUTRAL = CandidateSpec("baseline", 1.0, None)


def candidate_family(space: CandidateSpace) -> list[CandidateSpec]:
    """The gamma grid on every tunable head, interleaved with two gammas on the early and on the late half of the layers."""
    layers = space.layers
    halves = {"early": layers[: len(layers) // 2], "late": layers[len(layers) // 2 :]} if len(layers) > 1 else {}
    everything = [CandidateSpec(f"all heads, gamma {gamma:g}", gamma, None) for gamma in ALL_HEADS_GAMMAS]
    partial = [
        CandidateSpec(f"{half} layers {group[0]}-{group[-1]}, gamma {gamma:g}", gamma, tuple((layer, head) for layer in group for head in range(space.num_heads)))
        for gamma in HALF_LAYER_GAMMAS
        for half, group in halves.items()
    ]
    family = everything[:4] + partial + everything[4:]  # the half-layer candidates rank after four gammas on every head
    return family


@dataclass(frozen=True)
class HalvingPlan:
    """Rungs of (candidates, prefix length); the last rung is the whole split."""

    rungs: tuple[tuple[int, int], ...]
    cost_examples: int

    def to_json(self) -> dict:
        return {"rungs": [{"candidates": count, "examples": size} for count, size in self.rungs], "cost_examples": self.cost_examples}


def halving_cost(rungs: list[tuple[int, int]]) -> int:
    """Examples scored: each candidate is scored once per example up to the longest prefix it reaches."""
    cost = 0
    for index, (count, size) in enumerate(rungs):
        promoted = rungs[index + 1][0] if index + 1 < len(rungs) else 0
        cost += (count - promoted) * size
    return cost


def plan_halving(candidates: int, examples: int, budget_examples: float, eta: int = ETA, min_prefix: int = MIN_PREFIX) -> HalvingPlan | None:
    """The plan with the longest first prefix that fits the budget, for ``candidates`` at the first rung; None if none fits."""
    counts = [candidates]
    while counts[-1] > 1:
        counts.append(math.ceil(counts[-1] / eta))
    best = None
    for first in range(min(min_prefix, examples), examples + 1):
        sizes = [first * eta**index for index in range(len(counts) - 1)] + [examples]
        sizes = [examples if size >= WHOLE_SPLIT_SHARE * examples else size for size in sizes]
        rungs = [(count, size) for count, size in zip(counts, sizes)]
        # merge rungs that reach the whole split early: the candidates left there all see every example
        while len(rungs) > 1 and rungs[-2][1] == examples:
            rungs.pop()
        cost = halving_cost(rungs)
        if cost > budget_examples:
            break
        best = HalvingPlan(tuple(rungs), cost)
    return best


def plan_search(
    space: CandidateSpace, examples: int, budget: float, min_examples: int = 1, family: list[CandidateSpec] | None = None
) -> tuple[list[CandidateSpec], HalvingPlan]:
    """The family (lowest-priority candidates dropped where the budget needs it) and its halving plan.

    Every rung's prefix holds at least ``min_examples`` (the objective's folds): an out-of-fold key
    cannot be computed on fewer (a lone candidate is scored on the whole split, so the folds never
    make the budget too small). Raises ValueError, naming --budget or --folds, when nothing fits;
    it needs only the split's size, so runs call it before scoring anything.
    """
    if not 0 < budget:
        raise ValueError(f"budget: got {budget}, expected a positive fraction of the published protocol's passes")
    if min_examples > examples:
        raise ValueError(f"--folds: the objective needs at least {min_examples} calibration examples per rung, but the split has {examples}")
    published = published_protocol_passes(space.num_heads)
    budget_examples = budget * published * examples - examples  # the baseline is paid already
    family = list(candidate_family(space) if family is None else family)
    min_prefix = max(MIN_PREFIX, min_examples)
    plan = None
    while family and plan is None:
        plan = plan_halving(len(family), examples, budget_examples, min_prefix=min_prefix)
        if plan is None:
            family.pop()
    if plan is None:
        raise ValueError(
            f"budget: {budget:g} x {published} published passes = {budget * published:.2f} passes over {examples} calibration "
            f"examples leaves no room for a single candidate besides the baseline; raise --budget"
        )
    return family, plan


class PrefixScores:
    """Scores of each profile on prefixes of one seeded order of the calibration examples, each example scored once."""

    def __init__(self, score_subset: ScoreSubset, order: np.ndarray, baseline: ScoredSplit, baseline_profile: Profile, ledger: CostLedger) -> None:
        self._score_subset = score_subset
        self.order = order
        self._ledger = ledger
        self._scores: dict[tuple, ScoredSplit] = {profile_key(baseline_profile): baseline.take(order)}

    def prefix(self, profile: Profile, size: int, description: str) -> ScoredSplit:
        key = profile_key(profile)
        have = self._scores.get(key)
        done = 0 if have is None else len(have)
        if done < size:
            new = self._score_subset(profile, self.order[done:size], description)
            self._scores[key] = new if have is None else ScoredSplit.concatenate([have, new])
        else:
            self._ledger.record_cache_hit()
        return self._scores[key].take(np.arange(size))


def budgeted_search(
    space: CandidateSpace,
    score_subset: ScoreSubset,
    objective: Objective,
    baseline: ScoredSplit,
    ledger: CostLedger,
    *,
    budget: float = 0.25,
    seed: int = 0,
    family: list[CandidateSpec] | None = None,
) -> LevelResult:
    """Successive halving within ``budget`` x the published protocol; returns the selected LevelResult."""
    examples = len(baseline)
    family, plan = plan_search(space, examples, budget, objective.min_examples, family)
    published = published_protocol_passes(space.num_heads)
    scores = PrefixScores(score_subset, np.random.default_rng(seed).permutation(examples), baseline, space.neutral(), ledger)
    alive = family[: plan.rungs[0][0]]
    rung_records = []
    for rung, (count, size) in enumerate(plan.rungs):
        scored = {}
        for spec in tqdm(alive, desc=f"rung {rung + 1}/{len(plan.rungs)} ({size} examples)", unit="candidate", leave=False):
            scored[spec] = scores.prefix(spec.profile(space), size, f"{spec.name} ({size} examples)")
        keys = {spec: objective.key(scored[spec]) for spec in alive}
        ranked = sorted(alive, key=lambda spec: (keys[spec], tuple(-c for c in spec.complexity(space))), reverse=True)
        keep = plan.rungs[rung + 1][0] if rung + 1 < len(plan.rungs) else len(ranked)
        rung_records.append(
            {
                "examples": size,
                "baseline_key": list(objective.key(scores.prefix(space.neutral(), size, "baseline"))),
                "candidates": [{"name": spec.name, "gamma": spec.gamma, "key": list(keys[spec]), "promoted": index < keep} for index, spec in enumerate(ranked)],
            }
        )
        alive = ranked[:keep]
    finalists = [NEUTRAL, *alive]
    final_scores = {spec: scores.prefix(spec.profile(space), examples, spec.name) for spec in finalists}
    selected, selection = one_standard_error_choice(finalists, final_scores, objective, space)
    natural = np.argsort(scores.order)
    chosen = final_scores[selected].take(natural)
    candidates = [
        Candidate(spec.gamma, objective.key(final_scores[spec]), {"name": spec.name, **final_scores[spec].summary(), **objective.metrics(final_scores[spec])})
        for spec in finalists
    ]
    heads = None if selected.heads is None else list(selected.heads)
    if selected.gamma == 1.0:
        note = "no finalist beat the baseline by more than one standard error on the calibration objective; the profile is neutral"
        heads = []
    else:
        note = f"selected {selected.name} ({selected.head_count(space)} heads) by the one-standard-error rule"
    search = {
        "budget": budget,
        "published_protocol_passes": published,
        "budget_example_equivalents": budget * published,
        "family": [{"name": spec.name, "gamma": spec.gamma, "head_count": spec.head_count(space)} for spec in family],
        "plan": plan.to_json(),
        "order_seed": seed,
        "rungs": rung_records,
        "selection": selection,
    }
    return LevelResult(
        BUDGETED,
        selected.gamma,
        heads,
        selected.profile(space),
        chosen,
        objective.key(chosen),
        candidates,
        note=note,
        search=search,
    )


def one_standard_error_choice(finalists: list[CandidateSpec], scored: dict, objective: Objective, space: CandidateSpace) -> tuple[CandidateSpec, dict]:
    """The simplest finalist within one standard error of the best (SE of the per-example difference to the best)."""
    keys = {spec: objective.key(scored[spec]) for spec in finalists}
    best = max(finalists, key=lambda spec: (keys[spec], tuple(-c for c in spec.complexity(space))))
    values = {spec: objective.per_example(scored[spec]) for spec in finalists}
    rows = []
    for spec in finalists:
        difference = values[best] - values[spec]
        standard_error = float(difference.std(ddof=1) / math.sqrt(len(difference))) if len(difference) > 1 else 0.0
        gap = keys[best][0] - keys[spec][0]
        rows.append({"name": spec.name, "gamma": spec.gamma, "key": list(keys[spec]), "gap_to_best": gap, "standard_error": standard_error, "within_one_se": gap <= standard_error})
    eligible = [spec for spec, row in zip(finalists, rows) if row["within_one_se"]]
    chosen = min(eligible, key=lambda spec: (spec.complexity(space), -keys[spec][0]))
    return chosen, {"rule": "one standard error", "best": best.name, "selected": chosen.name, "finalists": rows}
