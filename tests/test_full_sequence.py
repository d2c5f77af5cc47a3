"""Whole-answer scoring of multi-token labels (``full_sequence``) on a tiny random Llama, against float64 by hand."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest
import torch

from zerotuning.cli import main
from zerotuning.evaluation.calibration import fit_label_bias, label_bias_corrected
from zerotuning.evaluation.report import compare_on_test
from zerotuning.hf import apply, remove
from zerotuning.scoring import CostLedger, Scorer, SequencePlan, SequenceScorer, answer_tokens, make_scorer, prepare_task
from zerotuning.tasks import SplitPlan, TaskRequest, load_task
from zerotuning.tuning import CandidateSpace
from zerotuning.tuning.objectives import make_objective

from scoring_support import FILLER_WORDS, sentiment_rows, tiny_lm, word_tokenizer, write_jsonl

CITY_WORDS = ("new", "york", "delhi", "paris", "New", "Paris", "city", "lights", "taxis", "curry", "wine")
CITIES = {"new york": "taxis", "new delhi": "curry", "paris": "wine"}
# continuations of two lengths ("new york", "paris"): rows of one batch end their answers at different offsets
LONGER_CITIES = {"new york city": "taxis", "new delhi": "curry", "paris city": "wine"}


def city_rows(count: int, seed: int = 0, cities: dict[str, str] = CITIES) -> list[dict]:
    """Toy sentences whose cue word names a city: labels that share their first token, of several lengths."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        label = rng.choice(sorted(cities))
        words = [rng.choice(FILLER_WORDS + ("city", "lights")) for _ in range(rng.randint(2, 8))] + [cities[label]]
        rng.shuffle(words)
        rows.append({"id": f"c{index}", "text": " ".join(words), "label": label})
    return rows


def _city_setup(folder, cities: dict[str, str]):
    path = write_jsonl(city_rows(40, seed=5, cities=cities), folder / "cities.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"demo": 0.1, "calibration": 0.45, "test": 0.45})))
    tokenizer = word_tokenizer(extra_words=CITY_WORDS)
    model = tiny_lm(tokenizer)
    reference = copy.deepcopy(model).double()  # the untouched model in float64, for sums by hand
    prepared = prepare_task(task, tokenizer, shots=1, seed=0)
    return prepared, tokenizer, model, reference


@pytest.fixture(scope="module")
def cities(tmp_path_factory):
    setup = _city_setup(tmp_path_factory.mktemp("data"), CITIES)
    yield setup
    remove(setup[2])


@pytest.fixture(scope="module", params=[CITIES, LONGER_CITIES], ids=["two-rows", "four-rows"])
def any_cities(request, tmp_path_factory):
    setup = _city_setup(tmp_path_factory.mktemp("data"), request.param)
    yield setup
    remove(setup[2])


def _by_hand(reference, prompt: tuple[int, ...], sequences) -> list[float]:
    """Per answer: log-sum-exp over its forms of the float64 sum of each form token's log-probability, one pass per form."""
    scores = []
    for forms in sequences:
        totals = []
        for form in forms:
            with torch.no_grad():
                log_probs = torch.log_softmax(reference(torch.tensor([prompt + form])).logits[0].double(), -1)
            start = len(prompt) - 1
            totals.append(float(sum(log_probs[start + k, token] for k, token in enumerate(form))))
        scores.append(float(torch.logsumexp(torch.tensor(totals, dtype=torch.float64), 0)))
    return scores


def _greedy_by_hand(reference, prompt: tuple[int, ...], sequences) -> int:
    """The answer greedy decoding writes whole (any of its forms), else -1."""
    longest = max(len(form) for forms in sequences for form in forms)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(longest):
            ids.append(int(reference(torch.tensor([ids])).logits[0, -1].argmax()))
    written = tuple(ids[len(prompt) :])
    hits = [answer for answer, forms in enumerate(sequences) for form in forms if written[: len(form)] == form]
    return hits[0] if hits else -1


def test_auto_scores_shared_first_tokens_by_whole_answers_and_surface_refuses_them(cities):
    prepared, tokenizer, _, _ = cities
    tokens = prepared.answer_tokens
    assert tokens.answers == ("new delhi", "new york", "paris")
    assert tokens.mode == "full_sequence" and tokens.requested == "auto" and "both start with the token 'new'" in tokens.reason
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in CITY_WORDS}
    assert tokens.sequences == (
        ((ids["new"], ids["delhi"]), (ids["New"], ids["delhi"])),
        ((ids["new"], ids["york"]), (ids["New"], ids["york"])),
        ((ids["paris"],), (ids["Paris"],)),
    )
    plan = SequencePlan.of(tokens)
    assert plan.continuations == ((ids["new"],), (ids["New"],)) and plan.rows_per_example == 2
    assert prepared.summary()["answer_scoring"]["mode"] == "full_sequence"
    assert prepared.summary()["answer_tokens"][1]["form_texts"] == ["new york", "New york"]
    with pytest.raises(ValueError, match="'new delhi' and 'new york' both start with the token 'new'.*--answer-forms full_sequence"):
        answer_tokens(tokenizer, tokens.answers, forms="surface")
    with pytest.raises(ValueError, match="use make_scorer"):
        Scorer(cities[2], tokenizer, tokens, batch_size=2, ledger=CostLedger())


def test_whole_answer_scores_are_the_float64_sums_of_token_log_probs(any_cities):
    prepared, tokenizer, model, reference = any_cities
    test_set = prepared.sets["test"]
    ledger = CostLedger()
    scorer = make_scorer(model, tokenizer, prepared.answer_tokens, batch_size=5, ledger=ledger)
    assert isinstance(scorer, SequenceScorer)
    scored = scorer.score(test_set, "whole answers")
    count, continuations = len(test_set.example_ids), scorer.plan.continuations
    rows = len(continuations)
    # two rows per example (prompt + "new", prompt + "New"), or four (+ "new york", "New york", "paris", "Paris"); ceil(rows N / 5) batches
    assert rows == (2 if prepared.answer_tokens.answers[-1] == "paris" else 4) and {len(c) for c in continuations} <= {1, 2}
    assert ledger.total().examples_scored == rows * count and ledger.total().forward_passes == -(-rows * count // 5)
    assert ledger.total().tokens == int(rows * test_set.lengths().sum() + count * sum(len(c) for c in continuations))
    sequences = prepared.answer_tokens.sequences
    for index in range(count):
        prompt = test_set.token_ids[index]
        np.testing.assert_allclose(scored.vocab_log_probs()[index], _by_hand(reference, prompt, sequences), atol=2e-5)
        with torch.no_grad():
            first = torch.log_softmax(reference(torch.tensor([prompt])).logits[0, -1].double(), -1)
        assert scored.vocab_entropy[index] == pytest.approx(float(-(first.exp() * first).sum()), abs=1e-5)
        assert scored.greedy_tokens[index] == int(first.argmax())
        assert scored.greedy_answers[index] == _greedy_by_hand(reference, prompt, sequences)
    one = make_scorer(model, tokenizer, prepared.answer_tokens, batch_size=1, ledger=CostLedger()).score(test_set, "batch 1")
    np.testing.assert_allclose(one.answer_logits, scored.answer_logits, atol=1e-5)
    assert len(set(test_set.lengths().tolist())) > 1  # the batches really are padded


def test_a_profile_changes_whole_answer_scores_and_gamma_one_leaves_them(any_cities):
    prepared, tokenizer, model, _ = any_cities
    calibration, test = prepared.sets["calibration"], prepared.sets["test"]
    scorer = make_scorer(model, tokenizer, prepared.answer_tokens, batch_size=8, ledger=CostLedger())
    space = CandidateSpace.for_model(model)
    remove(model)
    untouched = {name: scorer.score(split, "untouched") for name, split in (("calibration", calibration), ("test", test))}
    try:
        apply(model, space.neutral())
        neutral = scorer.score(test, "gamma 1")
        apply(model, space.uniform(3.0))
        tuned = {name: scorer.score(split, "gamma 3") for name, split in (("calibration", calibration), ("test", test))}
        one_row = make_scorer(model, tokenizer, prepared.answer_tokens, batch_size=1, ledger=CostLedger()).score(test, "gamma 3, batch 1")
    finally:
        remove(model)
    np.testing.assert_allclose(neutral.answer_logits, untouched["test"].answer_logits, atol=1e-5)
    assert (neutral.greedy_answers == untouched["test"].greedy_answers).all()
    assert np.abs(tuned["test"].answer_logits - untouched["test"].answer_logits).max() > 1e-2
    np.testing.assert_allclose(one_row.answer_logits, tuned["test"].answer_logits, atol=1e-5)

    # calibration on top: label bias fitted on the calibration split's whole-answer scores
    comparison = compare_on_test(untouched["test"], tuned["test"], untouched["calibration"], tuned["calibration"], resamples=200)
    bias = fit_label_bias(tuned["calibration"].answer_log_probs(), tuned["calibration"].choice_mask)
    corrected = label_bias_corrected(tuned["test"].answer_log_probs(), tuned["test"].choice_mask, bias)
    expected = float((corrected.argmax(-1) == tuned["test"].answers).mean())
    assert comparison["methods"]["tuned+label_bias"]["accuracy"]["estimate"] == pytest.approx(expected)
    assert comparison["methods"]["tuned+label_bias"]["label_bias"] == pytest.approx(bias.tolist())
    probs = np.exp(tuned["calibration"].answer_log_probs())
    np.testing.assert_allclose(probs.sum(-1), 1.0)
    assert bias == pytest.approx(probs.mean(0))  # the mean whole-answer distribution
    objective = make_objective("supervised", calibration="label_bias", folds=3)
    assert np.isfinite(objective.key(tuned["calibration"])).all()


def test_single_token_answers_score_alike_whole_or_by_surface_forms(tmp_path):
    tokenizer = word_tokenizer(extra_words=("Negative", "Positive"))
    path = write_jsonl(sentiment_rows(20, seed=2), tmp_path / "reviews.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"demo": 0.2, "calibration": 0.4, "test": 0.4})))
    surface = prepare_task(task, tokenizer, answer_forms="surface")
    whole = prepare_task(task, tokenizer, answer_forms="full_sequence")
    assert whole.answer_tokens.reason == "asked for" and surface.answer_tokens.reason == "asked for"
    assert prepare_task(task, tokenizer).answer_tokens.mode == "surface"  # auto: first tokens differ
    assert [[form[0] for form in forms] for forms in whole.answer_tokens.sequences] == [list(f) for f in surface.answer_tokens.forms]
    model = tiny_lm(tokenizer)
    ledger = CostLedger()
    by_forms = Scorer(model, tokenizer, surface.answer_tokens, batch_size=4, ledger=ledger).score(surface.sets["test"], "surface")
    scorer = make_scorer(model, tokenizer, whole.answer_tokens, batch_size=4, ledger=ledger)
    by_sequence = scorer.score(whole.sets["test"], "whole")
    assert scorer.rows_per_example == 1  # single-token answers need the prompt row only
    np.testing.assert_allclose(by_sequence.vocab_log_probs(), by_forms.vocab_log_probs(), atol=1e-5)
    np.testing.assert_allclose(by_sequence.vocab_entropy, by_forms.vocab_entropy, atol=1e-5)
    assert (by_sequence.greedy_answers == by_forms.greedy_answers).all()


class TableTokenizer:
    """``"Answer:"`` is token 0; what follows it is looked up in a table (each form's tokens); ``texts`` decode them."""

    def __init__(self, table: dict[str, list[int]], texts: dict[int, str]):
        self.table = table
        self.texts = {0: "Answer:", **texts}

    def __call__(self, text, add_special_tokens=False):
        rest = text[len("Answer:") :]
        return {"input_ids": [0] + (self.table[rest] if rest in self.table else [99] if rest else [])}

    def decode(self, ids):
        return " ".join(self.texts.get(i, "?") for i in ids)


def test_forms_that_prefix_another_answer_are_dropped_and_canonical_prefixes_refused():
    table = {
        " new york": [1, 2], "new york": [1, 2], " New york": [3, 2], "New york": [3, 2],
        " new": [1], "new": [1], " New": [3], "New": [3],
        " york": [2], "york": [2], " York": [4], "York": [4],
        " ny": [5], "ny": [6], " Ny": [3], "Ny": [3, 7],
    }
    texts = {1: "new", 2: "york", 3: "New", 4: "York", 5: "ny", 6: "ny", 7: "y"}
    with pytest.raises(ValueError, match="answer 'new' .* is a token prefix of .* a form of answer 'new york'"):
        answer_tokens(TableTokenizer(table, texts), ("new", "new york"), forms="full_sequence")
    # " Ny" (token 3) prefixes " New york" (3, 2): dropped; "Ny" (3, 7) prefixes no other answer's form and stays
    tokens = answer_tokens(TableTokenizer(table, texts), ("new york", "ny", "york"), forms="full_sequence")
    assert tokens.mode == "full_sequence" and tokens.reason == "asked for"
    assert tokens.sequences == (((1, 2), (3, 2)), ((5,), (6,), (3, 7)), ((2,), (4,)))
    assert tokens.dropped_forms == ("ny: 'New'",)
    assert tokens.form_texts[1] == ("ny", "ny", "New y")
    bare = answer_tokens(TableTokenizer(table, texts), ("new york", "ny", "york"), forms="full_sequence", prefix="")  # after an assistant header
    assert bare.sequences == (((1, 2), (3, 2)), ((6,), (3, 7), (5,)), ((2,), (4,))) and bare.token_ids == (1, 6, 2)
    with pytest.raises(ValueError, match="are written the same"):
        answer_tokens(TableTokenizer(table, texts), ("york", "York"), forms="full_sequence")


def test_tune_runs_a_task_with_shared_first_tokens_and_says_how_answers_were_scored(tmp_path, capsys):
    tokenizer = word_tokenizer(extra_words=CITY_WORDS)
    model_folder = tmp_path / "tiny-llama"
    tiny_lm(tokenizer).save_pretrained(model_folder)
    tokenizer.save_pretrained(model_folder)
    data = write_jsonl(city_rows(64, seed=6), tmp_path / "cities.jsonl")
    out = tmp_path / "run"
    code = main(["tune", "--model", str(model_folder), "--task", str(data), "--batch-size", "16", "--bootstrap-resamples", "200",
                 "--budget", "0.5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "answers scored by: full_sequence (auto: answers 'new delhi' and 'new york' both start" in printed
    assert "2 prompt rows per example" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["answer_forms"] == "auto" and results["task"]["answer_scoring"]["mode"] == "full_sequence"
    cost = results["cost"]["tuning"]
    assert cost["rows_per_example"] == 2 and cost["example_equivalent_passes"] == pytest.approx(2 * cost["split_passes"])
    assert cost["split_passes"] <= 0.5 * cost["published_protocol_passes"] and cost["fraction_of_published"] <= 0.5
    search = results["tuning"]["levels"]["budgeted"]["search"]
    assert 2 * search["plan"]["cost_examples"] == results["cost"]["stages"]["budgeted"]["examples_scored"]
    card = (out / "README.md").read_text()
    assert "| answer scoring | full_sequence (auto: answers 'new delhi' and 'new york' both start" in card
    record = json.loads((out / "profile.json").read_text())
    code = main(["evaluate", "--profile", str(out), "--bootstrap-resamples", "200", "--out", str(tmp_path / "evaluation.json")])
    assert code == 0 and "answers scored by: full_sequence" in capsys.readouterr().out
    evaluation = json.loads((tmp_path / "evaluation.json").read_text())
    assert evaluation["test"]["methods"]["tuned"]["accuracy"] == results["test"]["methods"]["tuned"]["accuracy"]
    assert record  # the profile folder is complete


class Bigram(torch.nn.Module):
    """Next-token logits from the last token alone (a table), so greedy continuations can be set by hand."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab, generator=torch.Generator().manual_seed(0)))
        self.eval()

    def forward(self, input_ids, attention_mask, position_ids, use_cache, logits_to_keep):
        return type("Output", (), {"logits": self.table[input_ids][:, -logits_to_keep:]})()


def test_the_greedy_answer_is_the_answer_greedy_decoding_writes_whole(cities):
    prepared, tokenizer, _, _ = cities
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in CITY_WORDS + (":",)}
    model = Bigram(len(tokenizer))
    scorer = make_scorer(model, tokenizer, prepared.answer_tokens, batch_size=4, ledger=CostLedger())
    test = prepared.sets["test"]
    with torch.no_grad():
        model.table[ids[":"]] = 0.0
        model.table[ids[":"], ids["New"]] = 5.0
        for after_new, expected in (("york", 1), ("delhi", 0), ("lights", -1)):
            model.table[ids["New"]] = 0.0
            model.table[ids["New"], ids[after_new]] = 4.0
            scored = scorer.score(test, after_new)
            assert (scored.greedy_answers == expected).all(), after_new
            assert (scored.greedy_tokens == ids["New"]).all()
        first, second = (torch.log_softmax(model.table[ids[word]].double(), -1) for word in (":", "New"))
        first_lower, second_lower = torch.log_softmax(model.table[ids[":"]].double(), -1), torch.log_softmax(model.table[ids["new"]].double(), -1)
    # "new delhi" = log(p(new | :) p(delhi | new) + p(New | :) p(delhi | New)), the same for every example
    expected_delhi = np.logaddexp(float(first_lower[ids["new"]] + second_lower[ids["delhi"]]), float(first[ids["New"]] + second[ids["delhi"]]))
    np.testing.assert_allclose(scored.vocab_log_probs()[:, 0], expected_delhi, rtol=1e-6)
    expected_paris = np.logaddexp(float(first[ids["paris"]]), float(first[ids["Paris"]]))
    np.testing.assert_allclose(scored.vocab_log_probs()[:, 2], expected_paris, rtol=1e-6)
