"""The sink is the BOS in every row lm-eval feeds, for each request type, short and long inputs alike.

One run of all four test tasks with a max_length shorter than the long reviews, so that contexts
are cut, generation prompts truncated and documents windowed. The rows are read from the model's
own forward calls (not from zerotuning's code), and each row's sink is the key index the
zerotuning mask function recorded for the kernel.
"""

from __future__ import annotations

import json

import pytest

from zerotuning import Profile
from zerotuning.lm_eval import evaluate

from conftest import TASK_NAMES
from forward_log import ForwardLog

BOS = 2
MAX_LENGTH = 16


@pytest.fixture(scope="module")
def logged_run(task_dir):
    from scoring_support import tiny_lm, word_tokenizer

    tokenizer = word_tokenizer()
    model = tiny_lm(tokenizer)
    with pytest.MonkeyPatch.context() as monkeypatch:
        log = ForwardLog(model, monkeypatch)
        results = evaluate(
            model, tokenizer, Profile.uniform(model, 2.0), list(TASK_NAMES.values()),
            include_path=str(task_dir), max_length=MAX_LENGTH, batch_size=3,
        )
    return log.calls, results


def test_every_row_starts_with_the_bos_and_the_bos_is_the_sink(logged_run):
    calls, results = logged_run
    prompt_sinks = None
    for call in calls:
        assert set(call["sinks"]) == {"full"}, "every forward recorded its sinks"
        sinks = call["sinks"]["full"]
        if call["decoding"]:  # the sink stays the prompt's BOS, now a key in the cache
            assert sinks == prompt_sinks
            continue
        for row, ids in enumerate(call["input_ids"]):  # a loglikelihood row, a rolling window or a generation prompt
            mask = None if call["attention_mask"] is None else call["attention_mask"][row]
            real = ids if mask is None else [token for token, keep in zip(ids, mask) if keep]
            assert sinks[row] == (0 if mask is None else mask.index(1)), "the kernel's sink is the row's first real token"
            assert ids[sinks[row]] == BOS, f"row {ids}: the sink is token {ids[sinks[row]]}, not the BOS"
            assert real.count(BOS) == 1, f"row {ids}: the BOS appears {real.count(BOS)} times"
            assert len(ids) <= MAX_LENGTH
        prompt_sinks = sinks
    assert any(call["decoding"] for call in calls)
    for request_type, counts in results["zerotuning"]["sink_rows"].items():
        assert counts["rows"] > 0 and counts["rows_not_starting_with_bos"] == 0, request_type


def test_the_run_held_every_kind_of_row(logged_run, tokenizer, task_dir):
    """Long inputs (cut, truncated, windowed), one-token rows and left-padded generation rows."""
    calls, _ = logged_run
    texts = [json.loads(line)["text"] for line in (task_dir / "reviews.jsonl").read_text().splitlines()]
    lengths = [len(tokenizer(text)["input_ids"]) for text in texts]
    assert max(lengths) > 2 * MAX_LENGTH and min(lengths) < MAX_LENGTH
    assert any(call["input_ids"][0] == [BOS] for call in calls), "an empty context is the BOS alone"
    prompts = [call for call in calls if call["attention_mask"] is not None and not call["decoding"]]
    assert any(row[0] == 0 for call in prompts for row in call["attention_mask"]), "some generation rows are left-padded"
    assert any(len(call["input_ids"][0]) == MAX_LENGTH for call in calls if call["attention_mask"] is None)
