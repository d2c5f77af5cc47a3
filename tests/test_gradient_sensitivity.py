"""One-pass head sensitivity on tiny random models: gradients against finite differences of the scored surrogate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zerotuning.hf import apply, remove
from zerotuning.hf.backend import LOG_GAMMA_LEAF, log_gamma_of
from zerotuning.hf.differentiable import trainable_log_gammas
from zerotuning.profile import Profile
from zerotuning.scoring import CostLedger, Scorer, prepare_task
from zerotuning.tasks import SplitPlan, TaskRequest, load_task
from zerotuning.tuning import CandidateSpace
from zerotuning.tuning.gradient_probes import gradient_head_probes
from zerotuning.tuning.gradient_sensitivity import head_gradients, surrogate_name
from zerotuning.tuning.objectives import make_objective

from scoring_support import sentiment_rows, tiny_lm, word_tokenizer, write_jsonl

OBJECTIVES = {
    "answer_log_likelihood_vocab": ("supervised", "answers", "none"),
    "answer_log_likelihood_options": ("supervised", "answers", "label_bias"),
    "minus_answer_entropy": ("unsupervised", "answers", "none"),
    "minus_vocab_entropy": ("unsupervised", "vocab", "none"),
}


def scored_surrogate(scored, name):
    """The surrogate's mean, from the scorer's (non-differentiable) numbers."""
    rows = np.arange(len(scored))
    if name == "answer_log_likelihood_vocab":
        return scored.vocab_log_probs()[rows, scored.answers].mean()
    if name == "answer_log_likelihood_options":
        return scored.answer_log_probs()[rows, scored.answers].mean()
    if name == "minus_answer_entropy":
        return -scored.mean_answer_entropy()
    return -scored.mean_vocab_entropy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = write_jsonl(sentiment_rows(30, seed=4), tmp_path_factory.mktemp("data") / "reviews.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"demo": 0.1, "calibration": 0.45, "test": 0.45})))
    tokenizer = word_tokenizer()
    prepared = prepare_task(task, tokenizer, shots=1, seed=0)
    return tokenizer, prepared


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_gradients_match_finite_differences_of_the_scored_surrogate(setup, family, name):
    tokenizer, prepared = setup
    model = tiny_lm(tokenizer, family)  # float32: the op has no float64 kernel, so a wide central difference
    objective = make_objective(*OBJECTIVES[name])
    assert surrogate_name(objective) == name
    calibration = prepared.sets["calibration"]
    ledger = CostLedger()
    scorer = Scorer(model, tokenizer, prepared.answer_tokens, batch_size=4, ledger=ledger)
    space = CandidateSpace.for_model(model)
    base = Profile.for_heads(space.identity, 1.5, [(0, 1), (1, 2)])  # the gradient at a non-neutral profile too
    try:
        with ledger.stage("gradients"):
            gradients = head_gradients(model, scorer, calibration, objective, base, ledger)
        eps = 2e-2
        for layer, head in [(0, 0), (0, 1), (1, 2), (1, 3)]:
            values = []
            for sign in (1, -1):
                gammas = [list(row) for row in base.gammas]
                gammas[layer][head] *= math.exp(sign * eps)
                apply(model, Profile(space.identity, gammas))
                values.append(scored_surrogate(scorer.score(calibration, "fd"), name))
            numeric = (values[0] - values[1]) / (2 * eps)
            assert gradients[layer, head] == pytest.approx(numeric, rel=2e-2, abs=3e-5), (layer, head)
    finally:
        remove(model)
    assert np.abs(gradients).max() > 1e-4  # the random model does respond to the sink
    batches = math.ceil(len(calibration.example_ids) / 4)
    cost = ledger.stages["gradients"]
    assert (cost.forward_passes, cost.backward_passes, cost.examples_scored) == (batches, batches, len(calibration.example_ids))


def test_only_the_log_gammas_get_gradients_and_everything_is_put_back(setup):
    tokenizer, prepared = setup
    model = tiny_lm(tokenizer)
    scorer = Scorer(model, tokenizer, prepared.answer_tokens, batch_size=8, ledger=CostLedger())
    space = CandidateSpace.for_model(model)
    profile = space.uniform(2.0)
    try:
        head_gradients(model, scorer, prepared.sets["calibration"], make_objective("supervised"), profile, CostLedger())
        assert all(parameter.grad is None and parameter.requires_grad for parameter in model.parameters())
        modules = [module for module in model.modules() if LOG_GAMMA_LEAF in module.__dict__]
        assert modules == []
        apply(model, profile)
        with trainable_log_gammas(model) as leaves:
            assert len(leaves) == space.num_layers and all(leaf.requires_grad for leaf in leaves)
            torch.testing.assert_close(leaves[0], torch.full((space.num_heads,), math.log(2.0)))
            assert not any(parameter.requires_grad for parameter in model.parameters())
            with pytest.raises(RuntimeError, match="already active"):
                with trainable_log_gammas(model):
                    pass
        assert all(parameter.requires_grad for parameter in model.parameters())
    finally:
        remove(model)


def test_trainable_log_gammas_refuses_an_unpatched_or_training_model(setup):
    tokenizer, _ = setup
    model = tiny_lm(tokenizer)
    with pytest.raises(RuntimeError, match="apply"):
        with trainable_log_gammas(model):
            pass
    apply(model, CandidateSpace.for_model(model).neutral())
    try:
        model.train()
        with pytest.raises(ValueError, match="training mode"):
            with trainable_log_gammas(model):
                pass
    finally:
        model.eval()
        remove(model)


def test_gradient_probes_predict_first_order_changes_per_granularity():
    from zerotuning.profile import ModelIdentity

    space = CandidateSpace(ModelIdentity("llama", 3, 2, 1), layers=(0, 2))
    gradients = np.array([[0.5, -0.25], [9.0, 9.0], [-1.0, 0.0]])
    per_index = gradient_head_probes(space, gradients, probe_gamma=2.0, granularity="head")
    assert [effect.metrics["gradient"] for effect in per_index.effects] == [-0.5, -0.25]  # layer 1 is not tunable
    assert [effect.kind for effect in per_index.effects] == ["down", "down"]
    assert per_index.effects[0].key_change[0] == pytest.approx(-0.5 * math.log(2.0))
    per_head = gradient_head_probes(space, gradients, probe_gamma=0.5, granularity="layer_head")
    kinds = {(effect.layer, effect.head): effect.kind for effect in per_head.effects}
    assert kinds == {(0, 0): "up", (0, 1): "down", (2, 0): "down", (2, 1): "neutral"}  # below 1 mirrors the verdict
    assert per_head.heads_of("down") == [(0, 1), (2, 0)] and per_head.dominant_kind() == "down"
    with pytest.raises(ValueError, match="gradients: got shape"):
        gradient_head_probes(space, gradients[:2], granularity="head")
    with pytest.raises(ValueError, match="granularity"):
        gradient_head_probes(space, gradients, granularity="layer")
    with pytest.raises(ValueError, match="probe_gamma"):
        gradient_head_probes(space, gradients, probe_gamma=1.0)
