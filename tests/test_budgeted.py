"""The budgeted search: its plan, prefix scoring (each example once per candidate) and the one-standard-error choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zerotuning import ModelIdentity
from zerotuning.scoring import CostLedger, ScoredSplit
from zerotuning.tuning import CandidateSpace, make_objective
from zerotuning.tuning.budgeted import (
    CandidateSpec,
    budgeted_search,
    candidate_family,
    halving_cost,
    plan_halving,
    plan_search,
    published_protocol_passes,
)

EXAMPLES = 120


def scored_with_margins(margins: np.ndarray, indices: np.ndarray | None = None) -> ScoredSplit:
    """Two answers, the right one (0) ahead by ``margins`` per example (negative: wrong); ids name the split's indices."""
    logits = np.stack([margins, np.zeros_like(margins)], axis=1).astype(np.float32)
    count = len(margins)
    indices = np.arange(count) if indices is None else indices
    return ScoredSplit(
        example_ids=tuple(f"e{i}" for i in indices),
        answers=np.zeros(count, dtype=np.int64),
        choice_mask=np.ones((count, 2), dtype=bool),
        answer_logits=logits,
        vocab_logsumexp=np.full(count, 3.0),
        vocab_entropy=np.full(count, 2.0),
        greedy_tokens=np.zeros(count, dtype=np.int64),
        greedy_answers=np.zeros(count, dtype=np.int64),
    )


class SubsetScorer:
    """Per-example margins that depend on the profile: ``effect(gamma, heads)`` shifts every example by the same amount."""

    def __init__(self, effect, ledger: CostLedger | None = None):
        self.effect = effect
        self.ledger = ledger
        self.base = np.random.default_rng(0).normal(0.3, 1.0, EXAMPLES)
        self.examples_scored: dict[tuple, int] = {}
        self.seen: dict[tuple, set] = {}

    def __call__(self, profile, indices, description):
        key = tuple(map(tuple, profile.gammas))
        assert not (self.seen.setdefault(key, set()) & set(indices.tolist())), "an example was scored twice"
        self.seen[key] |= set(indices.tolist())
        if self.ledger is not None:
            self.ledger.record_forward(len(indices), len(indices), len(indices))
        shift = self.effect(profile)
        return scored_with_margins(self.base[indices] + shift, indices)


def space() -> CandidateSpace:
    return CandidateSpace(ModelIdentity("synthetic", 4, 9, 3))


def test_plan_fits_the_budget_and_counts_each_example_once_per_candidate():
    assert halving_cost([(9, 10), (3, 30), (1, 100)]) == 6 * 10 + 2 * 30 + 100
    # 9 candidates, 3.25 passes over 158 examples: 6 x n + 2 x 3n + 158 <= 513.5 -> n = 29 (n = 30 costs 518).
    plan = plan_halving(9, 158, budget_examples=3.25 * 158)
    assert plan.rungs == ((9, 29), (3, 87), (1, 158)) and plan.cost_examples == 506
    assert plan_halving(12, 158, budget_examples=3.25 * 158) is None  # 12 -> 4 -> 2 -> 1 needs a first prefix below 16
    # a prefix within 80% of the split is the whole split: the two finalists both see every example
    assert plan_halving(6, 100, budget_examples=400).rungs == ((6, 50), (2, 100))  # 4 x 50 + 2 x 100 = 400
    assert published_protocol_passes(9) == 17


def test_family_holds_all_heads_and_half_layer_candidates():
    family = candidate_family(space())
    assert len(family) == 12 and all(spec.gamma != 1 for spec in family)
    halves = [spec for spec in family if spec.heads is not None]
    assert {len(spec.heads) for spec in halves} == {18}
    assert {layer for spec in halves if spec.name.startswith("early") for layer, _ in spec.heads} == {0, 1}


def gain_on_all_heads_at(best_gamma: float, size: float):
    def effect(profile):
        gammas = np.array(profile.gammas)
        if np.all(gammas == 1):
            return 0.0
        gamma = float(gammas.max() if gammas.max() > 1 else gammas.min())
        share = float((gammas != 1).mean())
        return size * share * (1 - (math.log(gamma) - math.log(best_gamma)) ** 2)

    return effect


@pytest.mark.parametrize("objective_name", ["supervised", "unsupervised"])
def test_a_large_gain_is_found_within_budget(objective_name):
    ledger = CostLedger()
    scorer = SubsetScorer(gain_on_all_heads_at(2.0, 1.5), ledger)
    baseline = scored_with_margins(scorer.base)
    objective = make_objective(objective_name, calibration="label_bias")
    with ledger.stage("budgeted"):
        result = budgeted_search(space(), scorer, objective, baseline, ledger, budget=0.25)
    assert result.gamma == 2.0 and result.heads is None
    assert ledger.stages["budgeted"].examples_scored <= (0.25 * 17 - 1) * EXAMPLES
    assert result.search["plan"]["cost_examples"] == ledger.stages["budgeted"].examples_scored
    assert list(result.scored.example_ids) == list(baseline.example_ids)  # back in the split's order
    np.testing.assert_allclose(result.scored.answer_logits[:, 0], scorer.base + 1.5, rtol=1e-6)


def test_a_gain_within_one_standard_error_keeps_the_baseline():
    scorer = SubsetScorer(gain_on_all_heads_at(2.0, 0.01))
    ledger = CostLedger()
    baseline = scored_with_margins(scorer.base)
    objective = make_objective("supervised", calibration="none")
    result = budgeted_search(space(), scorer, objective, baseline, ledger, budget=0.25)
    selection = result.search["selection"]
    assert result.gamma == 1.0 and result.heads == [] and selection["selected"] == "baseline"
    assert all(row["gap_to_best"] <= row["standard_error"] for row in selection["finalists"] if row["name"] == "baseline")


def test_a_budget_without_room_is_refused():
    scorer = SubsetScorer(lambda profile: 0.0)
    baseline = scored_with_margins(scorer.base)
    with pytest.raises(ValueError, match="raise --budget"):
        budgeted_search(space(), scorer, make_objective("supervised"), baseline, CostLedger(), budget=1 / 17)
    tiny = [CandidateSpec("all heads, gamma 2", 2.0, None)]
    result = budgeted_search(space(), scorer, make_objective("supervised"), baseline, CostLedger(), budget=2 / 17, family=tiny)
    assert result.search["plan"]["rungs"] == [{"candidates": 1, "examples": EXAMPLES}]


def test_every_rung_holds_at_least_one_example_per_fold():
    # 30 folds: the first rung (16 examples otherwise) must hold 30, or the out-of-fold key cannot be computed
    scorer = SubsetScorer(gain_on_all_heads_at(2.0, 1.5))
    baseline = scored_with_margins(scorer.base)
    objective = make_objective("supervised", calibration="label_bias", folds=30)
    result = budgeted_search(space(), scorer, objective, baseline, CostLedger(), budget=0.25)
    rungs = result.search["plan"]["rungs"]
    assert min(rung["examples"] for rung in rungs) >= 30 and rungs[-1]["examples"] == EXAMPLES
    assert result.gamma != 1.0  # the gain is still found


def test_a_plan_is_refused_from_the_split_size_alone():
    assert make_objective("supervised", calibration="none", folds=30).min_examples == 1
    assert make_objective("unsupervised", entropy_over="vocab", calibration="label_bias", folds=30).min_examples == 1
    with pytest.raises(ValueError, match="--folds: the objective needs at least 200"):
        plan_search(space(), EXAMPLES, 0.25, min_examples=200)
    with pytest.raises(ValueError, match="raise --budget"):
        plan_search(space(), EXAMPLES, 1 / 11, min_examples=5)  # the baseline's pass is the whole budget
    family, plan = plan_search(space(), EXAMPLES, 0.25, min_examples=100)
    assert plan.rungs[0][1] >= 100 and len(family) == plan.rungs[0][0]  # candidates dropped to fit the longer first rung
