"""Answer tokens, batching, per-example records and the batched scorer on a tiny random Llama."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zerotuning.scoring import (
    CostLedger,
    ScoredSplit,
    Scorer,
    answer_tokens,
    left_padded,
    length_sorted_batches,
    prepare_task,
)
from zerotuning.tasks import SplitPlan, TaskRequest, load_task

from scoring_support import sentiment_rows, tiny_lm, word_tokenizer, write_jsonl


class ChunkTokenizer:
    """Splits words into 4-character pieces (the first keeps the leading space): multi-token labels on demand."""

    def __init__(self):
        self.vocab: dict[str, int] = {}

    def __call__(self, text, add_special_tokens=False):
        pieces = []
        for position, word in enumerate(text.split(" ")):
            word = word if position == 0 else " " + word
            pieces += [word[i : i + 4] for i in range(0, len(word), 4)]
        return {"input_ids": [self.vocab.setdefault(piece, len(self.vocab)) for piece in pieces]}

    def decode(self, ids):
        pieces = {index: piece for piece, index in self.vocab.items()}
        return "".join(pieces[i] for i in ids)


def test_answer_tokens_take_the_first_token_after_the_cue_and_refuse_ambiguity():
    tokenizer = ChunkTokenizer()
    tokens = answer_tokens(tokenizer, ("yes", "maybe", "no"))
    assert [tokenizer.decode([i]) for i in tokens.token_ids] == [" yes", " may", " no"]
    assert tokens.token_counts == (1, 2, 1)
    assert tokens.parse("  MAY") == 1 and tokens.parse("No") == 2 and tokens.parse("perhaps") == -1 and tokens.parse(" ") == -1
    with pytest.raises(ValueError, match="'very good' and 'very bad' both start with the token ' ver'"):
        answer_tokens(tokenizer, ("very good", "very bad"), forms="surface")
    with pytest.raises(ValueError, match="both start with the token"):
        answer_tokens(tokenizer, ("Yes", "yes"), forms="first_token")  # distinct ids, but a parsed greedy answer could not tell them apart
    assert answer_tokens(tokenizer, ("very good", "very bad")).mode == "full_sequence"  # auto scores them whole


def test_length_sorted_batches_and_left_padding():
    batches = length_sorted_batches(np.array([3, 7, 1, 5, 7]), batch_size=2)
    assert [batch.tolist() for batch in batches] == [[1, 4], [3, 0], [2]]
    input_ids, mask = left_padded([(5, 6, 7), (8,)], pad_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="batch_size: got 0"):
        length_sorted_batches(np.array([1]), 0)


def test_scored_split_metrics_against_hand_computed_values():
    # Example 0: 2 of 3 options offered, equal logits -> entropy ln 2; example 1: three options, "B" most likely.
    scored = ScoredSplit(
        example_ids=("a", "b"),
        answers=np.array([1, 1]),
        choice_mask=np.array([[True, True, False], [True, True, True]]),
        answer_logits=np.array([[0.0, 0.0, 9.0], [0.0, math.log(2), 0.0]], dtype=np.float32),
        vocab_logsumexp=np.array([math.log(4), math.log(8)]),
        vocab_entropy=np.array([1.0, 3.0]),
        greedy_tokens=np.array([10, 11]),
        greedy_answers=np.array([-1, 1]),
    )
    log_probs = scored.answer_log_probs()
    assert np.exp(log_probs[0]).tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert np.exp(log_probs[1]).tolist() == pytest.approx([0.25, 0.5, 0.25])
    assert scored.predictions().tolist() == [0, 1]  # ties go to the first offered answer; option C of row 0 is masked
    summary = scored.summary()
    assert summary["accuracy"] == 0.5 and summary["greedy_accuracy"] == 0.5 and summary["invalid_rate"] == 0.5
    assert summary["mean_answer_entropy"] == pytest.approx((math.log(2) + 1.5 * math.log(2)) / 2)
    assert summary["mean_vocab_entropy"] == 2.0
    # log p(right answer) under the full vocabulary: log(1/4) and log(2/8).
    assert summary["mean_answer_log_likelihood"] == pytest.approx(math.log(0.25))
    assert summary["mean_answer_mass"] == pytest.approx((2 / 4 + 4 / 8) / 2)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    path = write_jsonl(sentiment_rows(30, seed=1), tmp_path_factory.mktemp("data") / "reviews.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"demo": 0.2, "calibration": 0.4, "test": 0.4})))
    tokenizer = word_tokenizer()
    return prepare_task(task, tokenizer, shots=2, seed=0), tokenizer, tiny_lm(tokenizer)


def test_prepared_task_tokenises_prompts_once_with_the_bos(prepared):
    prepared_task, tokenizer, _ = prepared
    calibration = prepared_task.sets["calibration"]
    assert len(calibration.example_ids) == 12 and len(prepared_task.demonstrations) == 2
    assert all(ids[0] == tokenizer.bos_token_id for ids in calibration.token_ids)
    assert tokenizer.decode(calibration.token_ids[0][-2:]) == "Answer :"
    summary = prepared_task.summary()
    assert summary["demonstration_ids"] == [demo.id for demo in prepared_task.demonstrations]
    assert [row["answer"] for row in summary["answer_tokens"]] == ["negative", "positive"]


def test_scorer_is_batch_invariant_and_matches_a_single_unpadded_pass(prepared):
    prepared_task, tokenizer, model = prepared
    test_set = prepared_task.sets["test"]
    ledger = CostLedger()
    with ledger.stage("one"):
        one = Scorer(model, tokenizer, prepared_task.answer_tokens, batch_size=1, ledger=ledger).score(test_set, "bs1")
    with ledger.stage("five"):
        five = Scorer(model, tokenizer, prepared_task.answer_tokens, batch_size=5, ledger=ledger).score(test_set, "bs5")
    assert ledger.stages["one"].forward_passes == 12 and ledger.stages["five"].forward_passes == 3
    assert ledger.stages["five"].examples_scored == 12
    assert ledger.stages["five"].tokens == int(test_set.lengths().sum()) < ledger.stages["five"].padded_tokens
    np.testing.assert_allclose(five.answer_logits, one.answer_logits, atol=1e-4)
    np.testing.assert_allclose(five.vocab_entropy, one.vocab_entropy, atol=1e-4)
    assert (five.greedy_tokens == one.greedy_tokens).all()

    index = 3  # recompute one example by hand, unbatched
    with torch.no_grad():
        logits = model(torch.tensor([test_set.token_ids[index]])).logits[0, -1].double()
    log_probs = torch.log_softmax(logits, -1)
    ids = list(prepared_task.answer_tokens.token_ids)
    np.testing.assert_allclose(five.answer_logits[index], logits[ids].numpy(), atol=1e-4)
    assert five.vocab_entropy[index] == pytest.approx(float(-(log_probs.exp() * log_probs).sum()), abs=1e-4)
    assert five.greedy_tokens[index] == int(logits.argmax())
    expected_answer = prepared_task.answer_tokens.parse(tokenizer.decode([int(logits.argmax())]))
    assert five.greedy_answers[index] == expected_answer
    assert five.answers.tolist() == test_set.answers.tolist()


def test_scorer_refuses_a_model_in_training_mode(prepared):
    prepared_task, tokenizer, model = prepared
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            Scorer(model, tokenizer, prepared_task.answer_tokens, batch_size=2, ledger=CostLedger())
    finally:
        model.eval()


def test_cost_ledger_nests_stages_and_totals_the_outermost():
    ledger = CostLedger()
    with ledger.stage("level2"):
        with ledger.stage("level2.profiling"):
            ledger.record_forward(4, 40, 48)
        ledger.record_cache_hit()
    ledger.record_forward(2, 10, 10)
    assert ledger.stages["level2"].forward_passes == 1 and ledger.stages["level2"].cache_hits == 1
    assert ledger.stages["level2.profiling"].examples_scored == 4
    total = ledger.total()
    assert (total.forward_passes, total.examples_scored, total.tokens) == (2, 6, 50)
    assert ledger.stages["level2"].seconds >= ledger.stages["level2.profiling"].seconds


class TableTokenizer:
    """``"Answer:"`` is token 0; what follows it is looked up in a table (each form's tokens), for surface-form tests."""

    def __init__(self, table: dict[str, list[int]]):
        self.table = table
        self.texts = {0: "Answer:"}
        for form, ids in table.items():
            self.texts.setdefault(ids[0], form)  # a shared token reads as the form that defined it first

    def __call__(self, text, add_special_tokens=False):
        rest = text[len("Answer:") :]
        return {"input_ids": [0] + (self.table[rest] if rest in self.table else [99] if rest else [])}

    def decode(self, ids):
        return "".join(self.texts.get(i, "?") for i in ids)


def test_surface_forms_collect_each_answers_first_tokens_and_drop_shared_ones():
    table = {" up": [1], "up": [2, 9], " Up": [3], "Up": [4], " down": [5], "down": [6], " Down": [7], "Down": [4]}
    tokens = answer_tokens(TableTokenizer(table), ("up", "down"))
    assert tokens.mode == "surface" and tokens.token_ids == (1, 5)
    # "Down" starts with the token of "Up": that token is dropped from both answers.
    assert tokens.forms == ((1, 3, 2), (5, 7, 6))
    assert tokens.dropped_forms == ("up: 'Up'", "down: 'Up'")
    assert tokens.parse(" Down") == 1 and tokens.parse("UP") == 0 and tokens.parse("sideways") == -1
    assert tokens.to_json()[1]["form_token_texts"] == [" down", " Down", "down"]
    first = answer_tokens(TableTokenizer(table), ("up", "down"), forms="first_token")
    assert first.forms == ((1,), (5,)) and first.mode == "first_token"
    with pytest.raises(ValueError, match="forms: got 'all'"):
        answer_tokens(TableTokenizer(table), ("up", "down"), forms="all")
    letters = answer_tokens(TableTokenizer({" A": [11], "A": [12], " a": [13], "a": [14], " B": [15], "B": [16]}), ("A", "B"))
    assert letters.forms == ((11, 12), (15, 16))  # an option letter has no lower-case form ("a" is a word)
    merged = answer_tokens(ChunkTokenizer(), ("yes", "no"))  # "Answer:yes" re-chunks the cue: no form without the space
    assert merged.form_texts == ((" yes", " Yes"), (" no", " No"))
    # After an assistant header (prefix ""), the canonical form is the bare word; the spaced forms still count.
    bare = answer_tokens(TableTokenizer(table), ("up", "down"), prefix="")
    assert bare.token_ids == (2, 6) and bare.token_counts == (2, 1) and bare.forms == ((2, 1, 3), (6, 5, 7))
    assert answer_tokens(TableTokenizer(table), ("up", "down"), forms="first_token", prefix="").forms == ((2,), (6,))
    with pytest.raises(ValueError, match="prefix: got '.+', expected ' ' .after a plain cue."):
        answer_tokens(TableTokenizer(table), ("up", "down"), prefix="\n")


def test_scorer_sums_the_mass_of_every_surface_form(tmp_path):
    tokenizer = word_tokenizer(extra_words=("Negative", "Positive"))
    path = write_jsonl(sentiment_rows(20, seed=2), tmp_path / "reviews.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"demo": 0.2, "calibration": 0.4, "test": 0.4})))
    prepared_task = prepare_task(task, tokenizer)
    forms = prepared_task.answer_tokens.forms
    assert [len(f) for f in forms] == [2, 2]  # " negative"/"negative" are one word-level token; "Negative" another
    model = tiny_lm(tokenizer)
    test_set = prepared_task.sets["test"]
    scored = Scorer(model, tokenizer, prepared_task.answer_tokens, batch_size=3, ledger=CostLedger()).score(test_set, "forms")
    for index in range(len(test_set.example_ids)):
        with torch.no_grad():
            logits = model(torch.tensor([test_set.token_ids[index]])).logits[0, -1].double()
        probs = torch.softmax(logits, -1)
        mass = [float(probs[list(ids)].sum()) for ids in forms]
        np.testing.assert_allclose(np.exp(scored.vocab_log_probs()[index]), mass, rtol=1e-4)
    subset = scored.take(np.array([2, 0]))
    assert subset.example_ids == (scored.example_ids[2], scored.example_ids[0])
    assert ScoredSplit.concatenate([scored.take(np.arange(3)), scored.take(np.arange(3, len(scored)))]).example_ids == scored.example_ids
