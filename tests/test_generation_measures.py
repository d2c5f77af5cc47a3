"""Generation measures: teacher-forced reference likelihood and greedy answers (KV cache, profile applied)
against an independent no-cache peer in float64; matching, degeneration and the paired report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from generation_support import arithmetic_rows, generation_lm, generation_tokenizer
from hf_eager_peer import peer_logits
from hf_helpers import mixed_profile

from scoring_support import write_jsonl
from zerotuning import applied
from zerotuning.evaluation.mcnemar import mcnemar_exact
from zerotuning.generation import prepare_generation
from zerotuning.generation.degeneration import is_empty, repeats
from zerotuning.generation.matching import contains_reference, exact_match, normalise, pattern_match
from zerotuning.generation.records import GenerationScores, Generations
from zerotuning.generation.report import compare_generation, format_generation_table
from zerotuning.generation.scorer import GenerationScorer
from zerotuning.scoring.cost import CostLedger
from zerotuning.tasks import SplitPlan, TaskRequest, load_task

NEW_TOKENS = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tokenizer = generation_tokenizer()
    path = write_jsonl(arithmetic_rows(24), tmp_path_factory.mktemp("gen") / "sums.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"calibration": 0.5, "test": 0.5})))
    prepared = prepare_generation(task, tokenizer, chat_template="on")
    return tokenizer, generation_lm(tokenizer), prepared


def _reference_log_likelihood(model, prompt, answer, gammas) -> float:
    """float64 mean log-probability of ``answer`` after ``prompt``, one unpadded row through the eager peer."""
    ids = torch.tensor([list(prompt) + list(answer)])
    logits = peer_logits(model, ids, torch.ones_like(ids), gammas)[0].double()
    log_probs = torch.log_softmax(logits, dim=-1)
    return float(np.mean([log_probs[len(prompt) + j - 1, token].item() for j, token in enumerate(answer)]))


def _reference_greedy(model, prompt, gammas, stops, steps):
    """Greedy tokens and float64 step entropies without any cache, the whole sequence re-run every step."""
    sequence, tokens, entropies = list(prompt), [], []
    for _ in range(steps):
        ids = torch.tensor([sequence])
        logits = peer_logits(model, ids, torch.ones_like(ids), gammas)[0, -1].double()
        probs = torch.softmax(logits, dim=-1)
        entropies.append(float(-(probs * torch.log(probs)).sum()))
        token = int(logits.argmax())
        tokens.append(token)
        sequence.append(token)
        if token in stops:
            break
    return tokens, entropies


@pytest.mark.parametrize("batch_size", [1, 5])
def test_reference_likelihood_matches_a_float64_single_row_reference(setup, batch_size):
    tokenizer, model, prepared = setup
    test_set = prepared.sets["test"]
    profile = mixed_profile(model)
    scorer = GenerationScorer(model, prepared.prompt_format, batch_size=batch_size, max_new_tokens=NEW_TOKENS, ledger=CostLedger())
    with applied(model, profile):
        scores = scorer.score(test_set, "test", measures=("likelihood",))
    assert scores.generations is None
    expected = [
        max(_reference_log_likelihood(model, prompt, answer, profile.gammas) for answer in answers)
        for prompt, answers in zip(test_set.prompt_ids, test_set.reference_ids)
    ]
    np.testing.assert_allclose(scores.reference_log_likelihood, expected, atol=2e-5, rtol=1e-5)
    assert any(len(refs) == 2 for refs in test_set.reference_ids)  # the max over references is exercised
    neutral = scorer.score(test_set, "test", measures=("likelihood",))
    assert not np.allclose(neutral.reference_log_likelihood, scores.reference_log_likelihood)  # the profile matters


def test_greedy_generation_with_cache_matches_the_no_cache_reference(setup):
    tokenizer, model, prepared = setup
    test_set = prepared.sets["test"]
    profile = mixed_profile(model)
    ledger = CostLedger()
    fmt = prepared.prompt_format
    # A stop set holding a token the model does emit, so that some answers end early and some run to the budget.
    with applied(model, profile):
        probe, _ = _reference_greedy(model, test_set.prompt_ids[0], profile.gammas, set(), NEW_TOKENS)
        fmt = replace(fmt, stop_token_ids=fmt.stop_token_ids + (probe[2],))
        scores = GenerationScorer(model, fmt, batch_size=4, max_new_tokens=NEW_TOKENS, ledger=ledger).score(test_set, "test", measures=("generation",))
    assert scores.reference_log_likelihood is None
    generations = scores.generations
    for index, prompt in enumerate(test_set.prompt_ids):
        tokens, entropies = _reference_greedy(model, prompt, profile.gammas, set(fmt.stop_token_ids), NEW_TOKENS)
        text, ended, used = fmt.answer_of(tokens)
        assert (generations.texts[index], bool(generations.ended[index]), int(generations.token_counts[index])) == (text, ended, used)
        assert generations.mean_entropy[index] == pytest.approx(np.mean(entropies[:used]), abs=1e-4)
    assert generations.ended.any() and not generations.ended.all()
    assert ledger.total().examples_scored == len(test_set) and ledger.total().forward_passes > len(test_set) / 4


def test_scorer_rejects_bad_settings(setup):
    tokenizer, model, prepared = setup
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationScorer(model, prepared.prompt_format, batch_size=2, max_new_tokens=0, ledger=CostLedger())
    scorer = GenerationScorer(model, prepared.prompt_format, batch_size=2, max_new_tokens=2, ledger=CostLedger())
    with pytest.raises(ValueError, match="measures"):
        scorer.score(prepared.sets["test"], "x", measures=("bleu",))


def test_matching_rules():
    assert normalise("  The Answer: 12. ") == "the answer: 12"
    assert exact_match("12.", ("12",)) and exact_match("Paris", ("paris",)) and not exact_match("12 apples", ("12",))
    assert contains_reference("It is 12 apples.", ("12",)) and not contains_reference("It is 112.", ("12",))
    assert contains_reference("new york city", ("New York",)) and not contains_reference("", ("x",))
    assert pattern_match("about 12 or so", r"\b12\b") == 1.0 and pattern_match("112", r"\b12\b") == 0.0
    assert np.isnan(pattern_match("12", ""))
    assert exact_match("Bogotá.", ("Bogota",)) and contains_reference("It is BRASÍLIA", ("Brasilia",))
    assert not exact_match("Bogotb", ("Bogota",))


def test_degeneration_rules():
    assert is_empty("  \n") and not is_empty("0")
    assert repeats("7 7 7 7") and repeats("is the answer is the answer is the answer") and not repeats("1 2 3 4 5 6")
    assert not repeats("12") and not repeats("")


def _scores(texts, ended, lls, refs, patterns):
    n = len(texts)
    generations = Generations(tuple(texts), np.full(n, 3), np.array(ended), np.linspace(0.5, 1.0, n))
    return GenerationScores(tuple(f"e{i}" for i in range(n)), tuple(refs), tuple(patterns), np.array(lls, dtype=float), generations)


def test_report_intervals_and_paired_tests_from_per_example_values():
    refs = [("1",), ("2",), ("3",), ("4",), ("5",)]
    patterns = [r"1", "", r"3", "", ""]
    baseline = _scores(["1", "x", "3", "4 4 4 4", ""], [True, True, True, False, True], [-1, -2, -3, -4, -5], refs, patterns)
    tuned = _scores(["1", "2", "no", "4", "5"], [True, True, True, True, True], [-0.5, -2, -2, -4, -1], refs, patterns)
    report = compare_generation(baseline, tuned, resamples=2000, seed=0)
    base, new = report["methods"]["baseline"], report["methods"]["tuned"]
    assert base["exact_match"]["estimate"] == pytest.approx(2 / 5) and new["exact_match"]["estimate"] == pytest.approx(4 / 5)
    assert base["degenerate"]["estimate"] == pytest.approx(2 / 5)  # the loop (also unfinished) and the empty answer
    assert base["regex_match"]["estimate"] == 1.0 and new["regex_match"]["estimate"] == 0.5  # 2 patterned examples only
    diff = report["tuned_vs_baseline"]
    assert diff["regex_match"]["examples"] == 2
    assert diff["reference_log_likelihood"]["difference"]["estimate"] == pytest.approx(np.mean([0.5, 0, 1, 0, 4]))
    assert diff["exact_match"]["mcnemar"] == mcnemar_exact(np.array([1, 0, 1, 0, 0], bool), np.array([1, 1, 0, 1, 1], bool)).to_json()
    low, high = diff["exact_match"]["difference"]["low"], diff["exact_match"]["difference"]["high"]
    assert low <= 0.4 <= high and "mcnemar" not in diff["reference_log_likelihood"]
    summary = baseline.summary()
    assert summary["regex_examples"] == 2 and summary["unfinished_rate"] == pytest.approx(0.2) and summary["repetition_rate"] == pytest.approx(0.2)
    table = format_generation_table(report)
    assert "exact_match" in table and "degenerate" in table
    with pytest.raises(ValueError, match="same examples"):
        compare_generation(baseline, replace(tuned, example_ids=("a",) * 5))


def test_objectives_read_their_measure_and_refuse_scores_without_it():
    from zerotuning.generation.objectives import make_generation_objective

    refs, patterns = [("1",), ("2",)], ["", ""]
    scores = _scores(["1", "3"], [True, False], [-1.0, -3.0], refs, patterns)
    supervised, unsupervised = make_generation_objective("supervised"), make_generation_objective("unsupervised")
    assert supervised.key(scores) == (-2.0,) and supervised.measures == ("likelihood",)
    assert unsupervised.key(scores) == (-0.75,) and unsupervised.measures == ("generation",)
    assert scores.summary()[supervised.metric] == -2.0 and scores.summary()[unsupervised.metric] == 0.75
    with pytest.raises(ValueError, match="no generations"):
        unsupervised.key(replace(scores, generations=None))
    with pytest.raises(ValueError, match="no reference log-likelihoods"):
        supervised.key(replace(scores, reference_log_likelihood=None))
    with pytest.raises(ValueError, match="objective"):
        make_generation_objective("bleu")
