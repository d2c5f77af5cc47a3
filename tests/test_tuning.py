"""Objectives, grid search, head probing and the levels, on synthetic objectives with known optima."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zerotuning import ModelIdentity, Profile
from zerotuning.scoring import CostLedger, ScoredSplit
from zerotuning.tuning import (
    CandidateSpace,
    ScoreCache,
    TuningConfig,
    best_candidate,
    make_objective,
    probe_heads,
    search_gamma,
    tune,
)
from zerotuning.tuning.search import Candidate

EXAMPLES = 1000


def fake_scored(accuracy: float, answer_margin: float = 1.0, vocab_entropy: float = 3.0) -> ScoredSplit:
    """A split with (rounded) ``accuracy``; the right answer's likelihood rises with the unrounded value."""
    correct = int(round(accuracy * EXAMPLES))
    logits = np.zeros((EXAMPLES, 2), dtype=np.float32)
    logits[:correct, 0] = answer_margin
    logits[correct:, 1] = answer_margin
    return ScoredSplit(
        example_ids=tuple(str(i) for i in range(EXAMPLES)),
        answers=np.zeros(EXAMPLES, dtype=np.int64),
        choice_mask=np.ones((EXAMPLES, 2), dtype=bool),
        answer_logits=logits,
        vocab_logsumexp=np.full(EXAMPLES, 5.0 - accuracy),
        vocab_entropy=np.full(EXAMPLES, vocab_entropy),
        greedy_tokens=np.zeros(EXAMPLES, dtype=np.int64),
        greedy_answers=np.zeros(EXAMPLES, dtype=np.int64),
    )


def synthetic_space(num_layers: int = 3, num_heads: int = 4, layers: tuple[int, ...] | None = None) -> CandidateSpace:
    """The candidates of a model shape with no model behind it (the scorer below stands in for one)."""
    return CandidateSpace(ModelIdentity("synthetic", num_layers, num_heads, num_heads), layers)


def preference(gamma: float, best: float = 3.0) -> float:
    """0 at gamma = 1, largest at ``best`` (a parabola in log gamma)."""
    return math.log(best) ** 2 - (math.log(gamma) - math.log(best)) ** 2


# Heads 0 and 1 gain from a larger sink (best at 3), head 2 loses, head 3 does nothing; only layer 0 matters
# when ``layer_zero_only``.
HEAD_SIGNS = (1.0, 1.0, -1.0, 0.0)


def synthetic_accuracy(profile: Profile, layer_zero_only: bool = False) -> float:
    total = 0.5
    for layer, row in enumerate(profile.gammas):
        for head, gamma in enumerate(row):
            if not (layer_zero_only and layer != 0):
                total += 0.05 * HEAD_SIGNS[head] * preference(gamma) / len(profile.gammas)
    return total


class CountingScorer:
    def __init__(self, **options):
        self.calls = 0
        self.options = options

    def __call__(self, profile, description):
        self.calls += 1
        return fake_scored(synthetic_accuracy(profile, **self.options))


def test_search_picks_the_known_best_gamma_and_never_rescores_the_baseline():
    calls = []

    def score(gamma):
        calls.append(gamma)
        return fake_scored(0.5 + 0.05 * preference(gamma, best=2.5))

    best, candidates = search_gamma([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0], score, make_objective("supervised"), fake_scored(0.5), "test")
    assert best.gamma == 2.5
    assert 1.0 not in calls and sorted(calls) == [0.5, 1.5, 2.0, 2.5, 3.0, 4.0]
    assert [candidate.gamma for candidate in candidates] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    assert candidates[1].metrics["accuracy"] == 0.5


def test_search_ties_go_to_the_smallest_intervention_and_the_baseline_wins_when_nothing_helps():
    flat = [Candidate(gamma, (0.7, -1.0), {}) for gamma in (0.75, 1.25, 2.0)]
    assert best_candidate(flat).gamma == 1.25  # |log 1.25| < |log 0.75|
    best, _ = search_gamma([0.5, 2.0], lambda gamma: fake_scored(0.4), make_objective("supervised"), fake_scored(0.6), "t")
    assert best.gamma == 1.0
    with pytest.raises(ValueError, match="gammas: expected a non-empty list of finite positive numbers"):
        search_gamma([0.0, 2.0], lambda gamma: fake_scored(0.5), make_objective("supervised"), fake_scored(0.5), "t")


def test_supervised_ties_are_broken_by_the_right_answers_likelihood():
    objective = make_objective("supervised")
    same_accuracy_more_likely = fake_scored(0.5004)  # rounds to the same 500 correct, higher likelihood
    assert objective.key(same_accuracy_more_likely)[0] == objective.key(fake_scored(0.5))[0]
    assert objective.key(same_accuracy_more_likely) > objective.key(fake_scored(0.5))


def test_unsupervised_objective_follows_the_chosen_entropy():
    # Answer entropy is lowest at gamma 0.5 (largest margin there), vocabulary entropy at gamma 3.
    def score(gamma):
        return fake_scored(0.5, answer_margin=3.0 - abs(math.log(gamma / 0.5)), vocab_entropy=2.0 + abs(math.log(gamma / 3.0)))

    grid = [0.25, 0.5, 1.5, 3.0, 4.0]
    baseline = score(1.0)
    by_answers, candidates = search_gamma(grid, score, make_objective("unsupervised", "answers"), baseline, "t")
    by_vocab, _ = search_gamma(grid, score, make_objective("unsupervised", "vocab"), baseline, "t")
    assert (by_answers.gamma, by_vocab.gamma) == (0.5, 3.0)
    assert all({"mean_answer_entropy", "mean_vocab_entropy"} <= set(candidate.metrics) for candidate in candidates)
    with pytest.raises(ValueError, match="entropy_over: got 'tokens'"):
        make_objective("unsupervised", "tokens")


def test_head_probing_per_head_index_finds_up_down_and_neutral_heads():
    space, scorer = synthetic_space(), CountingScorer()
    result = probe_heads(space, scorer, make_objective("supervised"), fake_scored(0.5), probe_gamma=2.0, granularity="head")
    assert [effect.kind for effect in result.effects] == ["up", "up", "down", "neutral"]
    assert scorer.calls == 4
    assert result.dominant_kind() == "up"
    assert result.heads_of("up") == [(layer, head) for layer in range(3) for head in (0, 1)]
    assert result.effect_matrix().shape == (1, 4)
    assert result.effects[0].key_change[0] > 0 > result.effects[2].key_change[0]


def test_head_probing_with_a_probe_below_one_mirrors_the_verdict():
    result = probe_heads(synthetic_space(), CountingScorer(), make_objective("supervised"), fake_scored(0.5), probe_gamma=0.5)
    assert [effect.kind for effect in result.effects] == ["up", "up", "down", "neutral"]


def test_head_probing_per_layer_and_head_probes_each_pair():
    space, scorer = synthetic_space(layers=(0, 2)), CountingScorer(layer_zero_only=True)
    result = probe_heads(space, scorer, make_objective("supervised"), fake_scored(0.5), granularity="layer_head")
    assert scorer.calls == 2 * 4
    kinds = {(effect.layer, effect.head): effect.kind for effect in result.effects}
    assert kinds == {(0, 0): "up", (0, 1): "up", (0, 2): "down", (0, 3): "neutral", **{(2, h): "neutral" for h in range(4)}}
    matrix = result.effect_matrix()
    assert matrix.shape == (3, 4) and np.isnan(matrix[1]).all() and (matrix[2] == 0).all()
    with pytest.raises(ValueError, match="granularity: got 'layer'"):
        probe_heads(space, scorer, make_objective("supervised"), fake_scored(0.5), granularity="layer")


def test_three_levels_share_the_baseline_and_the_cache_and_level_two_wins():
    ledger, scorer = CostLedger(), CountingScorer()
    cached = ScoreCache(scorer, ledger)
    space = synthetic_space()
    with ledger.stage("baseline"):
        baseline = cached(space.neutral(), "baseline")
    config = TuningConfig(levels=(0, 1, 2), fixed_gamma=2.0, gammas=(0.5, 1.5, 2.0, 2.5, 3.0, 4.0), probe_gamma=2.0)
    result = tune(space, cached, make_objective("supervised"), config, ledger, baseline)

    assert result.levels[0].gamma == 2.0 and result.levels[0].heads is None
    assert result.levels[1].gamma == 3.0 and result.levels[1].heads is None
    level2 = result.levels[2]
    assert level2.gamma == 3.0
    assert level2.heads == [(layer, head) for layer in range(3) for head in (0, 1)]
    assert [candidate.gamma for candidate in level2.candidates] == [1.0, 1.5, 2.0, 2.5, 3.0, 4.0]  # only gamma > 1
    assert result.selected_level == 2
    assert level2.key > result.levels[1].key > result.baseline_key
    # Scored once each: baseline, 6 grid points (level 0's gamma 2 is reused), 4 probes, 5 level-2 points.
    assert scorer.calls == 1 + 6 + 4 + 5
    assert level2.cost["level2.profiling"]["cache_hits"] == 0 and level2.cost["level2"]["cache_hits"] >= 1
    assert result.levels[1].cost["level1"]["cache_hits"] >= 1
    json_ready = result.to_json()
    assert json_ready["levels"]["2"]["head_profile"]["dominant_kind"] == "up"
    assert json_ready["levels"]["0"]["heads"] == "all"


def test_level_two_stays_neutral_when_no_head_matters_and_rejects_a_grid_on_the_wrong_side():
    ledger = CostLedger()
    space = synthetic_space()
    constant = ScoreCache(lambda profile, description: fake_scored(0.5), ledger)
    baseline = constant(space.neutral(), "b")
    result = tune(space, constant, make_objective("supervised"), TuningConfig(levels=(2,)), ledger, baseline)
    assert result.selected.gamma == 1.0 and result.selected.heads == [] and "neutral" in result.selected.note

    cached = ScoreCache(CountingScorer(), ledger)
    with pytest.raises(ValueError, match="needs gammas above 1"):
        tune(space, cached, make_objective("supervised"), TuningConfig(levels=(2,), gammas=(0.25, 0.5)), ledger, cached(space.neutral(), "b"))


def test_level3_is_selected_by_the_same_calibration_rule_and_kept_neutral_when_early_stopping_says_so():
    space = synthetic_space(layers=(0,))
    ledger = CostLedger()
    scorer = ScoreCache(CountingScorer(layer_zero_only=True), ledger)
    baseline = scorer(space.neutral(), "baseline")
    fitted = Profile(space.identity, [[3.0, 3.0, 1 / 3, 1.0], [1.0] * 4, [1.0] * 4])  # the synthetic optimum of each head

    def fit(fit_space, settings):
        assert fit_space is space and settings.steps == 5
        return fitted, {"best_step": 2, "steps_run": 5}

    config = TuningConfig(search="levels", levels=(1, 3), gammas=(0.5, 2.0, 3.0), fit_steps=5)
    result = tune(space, scorer, make_objective("supervised"), config, ledger, baseline, fit_gammas=fit)
    assert result.selected_level == 3 and result.selected.profile is fitted and result.selected.heads is None
    assert result.levels[3].key > result.levels[1].key and result.levels[3].to_json()["fit"]["best_step"] == 2
    assert result.selected.gamma == pytest.approx(math.exp((2 * math.log(3.0) - math.log(3.0)) / 4))
    assert "level3.fit" in result.levels[3].cost

    stopped = tune(space, scorer, make_objective("supervised"), config, ledger, baseline, fit_gammas=lambda *_: (fitted, {"best_step": 0, "steps_run": 3}))
    assert stopped.levels[3].profile.gammas == space.neutral().gammas and "early stopping kept the untouched model" in stopped.levels[3].note
    assert stopped.selected_level == 1  # the level 3 tie with the baseline loses to level 1's gain


def test_tuning_config_validates_levels_and_gammas():
    with pytest.raises(ValueError, match="levels: got \\[4\\]"):
        TuningConfig(levels=(4,))
    with pytest.raises(ValueError, match="fit_steps"):
        TuningConfig(levels=(3,), fit_steps=0)
    assert TuningConfig().levels == (0, 1, 2)  # level 3 only when asked for
    with pytest.raises(ValueError, match="fixed_gamma"):
        TuningConfig(fixed_gamma=-1.0)


def test_plots_of_a_tuning_run_are_written_as_png(tmp_path):
    from zerotuning.plots import plot_head_effects, plot_metric_vs_gamma

    ledger, space = CostLedger(), synthetic_space()
    cached = ScoreCache(CountingScorer(), ledger)
    result = tune(space, cached, make_objective("supervised"), TuningConfig(gammas=(0.5, 2.0, 3.0)), ledger, cached(space.neutral(), "b"))
    written = [
        plot_metric_vs_gamma(result, "accuracy", tmp_path / "metric.png"),
        plot_head_effects(result.levels[2].head_probes, "accuracy", tmp_path / "sub" / "heads.png"),
    ]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
