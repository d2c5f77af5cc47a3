"""The tuner on a real (tiny, random) HuggingFace model through the HF glue: candidates, padding, cache."""

from __future__ import annotations

import numpy as np
import pytest

from zerotuning.hf import remove
from zerotuning.scoring import CostLedger, Scorer, prepare_task
from zerotuning.tasks import SplitPlan, TaskRequest, load_task
from zerotuning.tuning import CandidateSpace
from zerotuning.tuning.model_scoring import apply_and_score

from scoring_support import sentiment_rows, tiny_lm, word_tokenizer, write_jsonl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = write_jsonl(sentiment_rows(40, seed=2), tmp_path_factory.mktemp("data") / "reviews.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"demo": 0.1, "calibration": 0.45, "test": 0.45})))
    tokenizer = word_tokenizer()
    model = tiny_lm(tokenizer)
    prepared = prepare_task(task, tokenizer, shots=1, seed=0)
    yield model, tokenizer, prepared
    remove(model)


def _scorer(setup, batch_size, ledger):
    model, tokenizer, prepared = setup
    return Scorer(model, tokenizer, prepared.answer_tokens, batch_size=batch_size, ledger=ledger)


def test_neutral_profile_scores_like_the_untouched_model(setup):
    model, _, prepared = setup
    ledger = CostLedger()
    remove(model)
    vanilla = _scorer(setup, 4, ledger).score(prepared.sets["calibration"], "vanilla")
    neutral = apply_and_score(model, _scorer(setup, 4, ledger), prepared.sets["calibration"], ledger)(CandidateSpace.for_model(model).neutral(), "neutral")
    np.testing.assert_allclose(neutral.answer_logits, vanilla.answer_logits, atol=1e-4)
    np.testing.assert_allclose(neutral.vocab_entropy, vanilla.vocab_entropy, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gemma3", "qwen2"])
def test_a_profile_changes_the_scores_identically_at_every_batch_size(setup, family):
    """Left padding moves each row's sink; batched scores must equal one-row-at-a-time scores.

    gemma3 and qwen2 have sliding-window layers (4 keys) where the answer position cannot see the sink.
    """
    _, tokenizer, prepared = setup
    model = tiny_lm(tokenizer, family)
    space = CandidateSpace.for_model(model)
    ledger = CostLedger()
    test_set = prepared.sets["test"]
    scorers = {size: Scorer(model, tokenizer, prepared.answer_tokens, batch_size=size, ledger=ledger) for size in (1, 18)}
    try:
        vanilla = scorers[18].score(test_set, "vanilla")
        one = apply_and_score(model, scorers[1], test_set, ledger)(space.uniform(3.0), "gamma 3, batch 1")
        many = apply_and_score(model, scorers[18], test_set, ledger)(space.uniform(3.0), "gamma 3, batch 18")
    finally:
        remove(model)
    assert len(set(test_set.lengths().tolist())) > 1  # the batch really is padded
    np.testing.assert_allclose(many.answer_logits, one.answer_logits, atol=1e-4)
    assert np.abs(one.answer_logits - vanilla.answer_logits).max() > 1e-3  # gamma 3 does change the model


def test_candidates_respect_the_tunable_layers_and_the_cache_counts_hits(setup):
    model, _, prepared = setup
    space = CandidateSpace.for_model(model, layers=(1,))
    assert (space.num_layers, space.num_heads, space.layers) == (2, 4, (1,))
    assert space.uniform(2.0).gammas == [[1.0] * 4, [2.0] * 4]
    assert space.for_heads(0.5, [(1, 2)]).gammas[1] == [1.0, 1.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="outside the tunable layers"):
        space.for_heads(0.5, [(0, 2)])
    with pytest.raises(ValueError, match="layers: got \\[5\\]"):
        CandidateSpace.for_model(model, layers=(5,))
    ledger = CostLedger()
    cached = apply_and_score(model, _scorer(setup, 8, ledger), prepared.sets["calibration"], ledger)
    with ledger.stage("twice"):
        first = cached(space.uniform(2.0), "a")
        second = cached(CandidateSpace.for_model(model, layers=(1,)).uniform(2.0), "b")
    assert first is second
    assert ledger.stages["twice"].forward_passes == 3 and ledger.stages["twice"].cache_hits == 1
