"""Out-of-fold calibration and the calibration-aware objectives, against direct fits on the other folds."""

from __future__ import annotations

import numpy as np
import pytest

from zerotuning.evaluation import fit_label_bias, label_bias_corrected
from zerotuning.evaluation.out_of_fold import fold_of_each_example, out_of_fold_label_bias
from zerotuning.scoring import ScoredSplit
from zerotuning.scoring.distributions import entropy_from_log_probs
from zerotuning.tuning import make_objective


def random_scored(count: int, choices: int, seed: int) -> ScoredSplit:
    rng = np.random.default_rng(seed)
    counts = rng.integers(2, choices + 1, count)
    mask = np.arange(choices)[None, :] < counts[:, None]
    logits = rng.normal(0, 2, (count, choices)) + np.array([1.5] + [0.0] * (choices - 1))  # a prior on answer 0
    return ScoredSplit(
        example_ids=tuple(str(i) for i in range(count)),
        answers=np.array([rng.integers(0, c) for c in counts]),
        choice_mask=mask,
        answer_logits=logits.astype(np.float32),
        vocab_logsumexp=np.full(count, 6.0),
        vocab_entropy=rng.uniform(1, 3, count),
        greedy_tokens=np.zeros(count, dtype=np.int64),
        greedy_answers=np.zeros(count, dtype=np.int64),
    )


def test_folds_are_balanced_seeded_order_free_and_refuse_too_few_examples():
    ids = tuple(f"x{i}" for i in range(23))
    folds = fold_of_each_example(ids, 5, seed=1)
    assert sorted(np.bincount(folds).tolist()) == [4, 4, 5, 5, 5]
    assert (folds == fold_of_each_example(ids, 5, seed=1)).all() and not (folds == fold_of_each_example(ids, 5, seed=2)).all()
    reversed_folds = fold_of_each_example(ids[::-1], 5, seed=1)
    assert (reversed_folds[::-1] == folds).all()  # the same example gets the same fold in any order
    with pytest.raises(ValueError, match="3 examples cannot fill 5 folds"):
        fold_of_each_example(ids[:3], 5, seed=0)
    with pytest.raises(ValueError, match="folds: got 1"):
        fold_of_each_example(ids, 1, seed=0)


@pytest.mark.parametrize("count,choices,seed", [(20, 2, 0), (57, 4, 1), (103, 3, 2)])
def test_each_example_is_calibrated_by_a_fit_on_the_other_folds(count, choices, seed):
    scored = random_scored(count, choices, seed)
    calibrated = out_of_fold_label_bias(scored, folds=5, seed=seed)
    folds = fold_of_each_example(scored.example_ids, 5, seed)
    log_probs = scored.answer_log_probs()
    for fold in range(5):
        others = folds != fold
        bias = fit_label_bias(log_probs[others], scored.choice_mask[others])
        expected = label_bias_corrected(log_probs[folds == fold], scored.choice_mask[folds == fold], bias)
        np.testing.assert_allclose(calibrated[folds == fold], expected)
    with_temperature = out_of_fold_label_bias(scored, folds=5, seed=seed, temperature=True)
    assert (with_temperature.argmax(-1) == calibrated.argmax(-1)).all()  # a temperature never changes the answer
    assert np.allclose(np.exp(with_temperature).sum(-1), 1.0)


def test_calibrated_objectives_mean_their_per_example_values():
    scored = random_scored(80, 3, 5)
    supervised = make_objective("supervised", calibration="label_bias", seed=5)
    calibrated = out_of_fold_label_bias(scored, 5, 5)
    accuracy = float((calibrated.argmax(-1) == scored.answers).mean())
    assert supervised.key(scored)[0] == pytest.approx(accuracy) == pytest.approx(supervised.per_example(scored).mean())
    assert supervised.metrics(scored)["oof_label_bias_accuracy"] == pytest.approx(accuracy)
    unsupervised = make_objective("unsupervised", calibration="label_bias", seed=5)
    assert unsupervised.key(scored)[0] == pytest.approx(-entropy_from_log_probs(calibrated).mean())
    vocab = make_objective("unsupervised", entropy_over="vocab", calibration="label_bias")
    assert vocab.key(scored)[0] == pytest.approx(-scored.vocab_entropy.mean()) and vocab.to_json()["calibration"] == "none"
    plain = make_objective("supervised")
    assert plain.key(scored)[0] == scored.accuracy() and plain.metrics(scored) == {}
    with pytest.raises(ValueError, match="calibration: got 'platt'"):
        make_objective("supervised", calibration="platt")
