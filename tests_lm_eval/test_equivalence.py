"""A neutral profile reproduces lm-eval's plain ``hf`` model per sample; gamma != 1 changes the scores.

Plain ``hf`` is lm-eval's HFLM on the same (unpatched) model and tokenizer. For rolling documents it
is given ``add_bos_token=False``: lm-eval then encodes the document without the tokenizer's BOS and
puts its prefix token (the BOS) first, the single-BOS row zerotuning feeds (docs/lm_eval.md).
"""

from __future__ import annotations

import lm_eval
import numpy as np
import pytest
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from zerotuning import Profile
from zerotuning.hf import active_profile
from zerotuning.lm_eval import evaluate

from conftest import TASK_NAMES

LOGLIKELIHOOD_TASKS = ["loglikelihood", "loglikelihood_no_context", "loglikelihood_rolling"]
ALL_TASKS = list(TASK_NAMES.values())


def _plain_hf(model, tokenizer, tasks: list[str], task_dir, **hflm_options) -> dict:
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=3, **hflm_options)
    results = lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(include_path=str(task_dir)), log_samples=True)
    return results["samples"]


@pytest.fixture(scope="module")
def runs(task_dir):
    """Per-task samples of plain hf, and of zerotuning with a neutral and a gamma-4 profile, on one tiny model."""
    from scoring_support import tiny_lm, word_tokenizer

    tokenizer = word_tokenizer()
    model = tiny_lm(tokenizer)
    rolling = TASK_NAMES["loglikelihood_rolling"]
    plain = _plain_hf(model, tokenizer, [task for task in ALL_TASKS if task != rolling], task_dir)
    plain |= _plain_hf(model, tokenizer, [rolling], task_dir, add_bos_token=False)
    zerotuning = {
        name: evaluate(model, tokenizer, profile, ALL_TASKS, include_path=str(task_dir), batch_size=3, log_samples=True)["samples"]
        for name, profile in (("neutral", Profile.neutral(model)), ("gamma4", Profile.uniform(model, 4.0)))
    }
    return {"plain": plain, **zerotuning}


def _log_likelihoods(samples: list[dict]) -> np.ndarray:
    """Per sample and request: the log-likelihood (rolling: per document)."""
    values = [response[0] if isinstance(response, (list, tuple)) else response for sample in samples for response in sample["filtered_resps"]]
    return np.asarray(values, dtype=np.float64)


@pytest.mark.parametrize("request_type", LOGLIKELIHOOD_TASKS)
def test_neutral_profile_gives_plain_hf_log_likelihoods(request_type, runs):
    task = TASK_NAMES[request_type]
    plain, neutral = runs["plain"][task], runs["neutral"][task]
    assert [s["doc_id"] for s in neutral] == [s["doc_id"] for s in plain]
    assert [s["arguments"] for s in neutral] == [s["arguments"] for s in plain]
    # The sink kernel with gamma 1 is exact attention; only float32 rounding differs from SDPA.
    np.testing.assert_allclose(_log_likelihoods(neutral), _log_likelihoods(plain), rtol=0, atol=2e-4)
    if request_type != "loglikelihood_rolling":
        greedy = lambda samples: [r[1] for s in samples for r in s["filtered_resps"]]  # noqa: E731
        assert greedy(neutral) == greedy(plain)
        assert [s["acc"] for s in neutral] == [s["acc"] for s in plain]


@pytest.mark.parametrize("request_type", LOGLIKELIHOOD_TASKS)
def test_gamma_not_one_changes_the_log_likelihoods(request_type, runs):
    task = TASK_NAMES[request_type]
    neutral, tuned = _log_likelihoods(runs["neutral"][task]), _log_likelihoods(runs["gamma4"][task])
    if request_type == "loglikelihood_no_context":
        # The row is [BOS]: the sink is the only key, and a softmax over one key ignores its bias.
        np.testing.assert_array_equal(tuned, neutral)
    else:
        assert np.abs(tuned - neutral).max() > 0.05


def test_generation_with_a_neutral_profile_matches_plain_hf_and_a_tuned_one_runs(runs):
    task = TASK_NAMES["generate_until"]
    plain, neutral, tuned = runs["plain"][task], runs["neutral"][task], runs["gamma4"][task]
    assert [s["filtered_resps"] for s in neutral] == [s["filtered_resps"] for s in plain]
    texts = [s["filtered_resps"][0] for s in tuned]
    assert len(texts) == len(plain) and all(isinstance(text, str) for text in texts)
    assert texts != [s["filtered_resps"][0] for s in neutral], "gamma 4 on every head changed some greedy continuation"


def test_the_model_is_left_as_it_was(model, tokenizer, task_dir):
    input_ids = torch.tensor([[2, 10, 11, 12, 13]])
    with torch.no_grad():
        before = model(input_ids).logits
    evaluate(model, tokenizer, Profile.uniform(model, 3.0), [TASK_NAMES["loglikelihood"]], include_path=str(task_dir))
    assert active_profile(model) is None
    with torch.no_grad():
        assert torch.equal(model(input_ids).logits, before)
