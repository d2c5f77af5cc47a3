"""The token rules that keep the BOS first: every length, checked against what lm-eval would feed."""

from __future__ import annotations

import pytest
import torch

from zerotuning.lm_eval.sink_inputs import rolling_windows, truncate_context, truncate_left_padded

SINK = 2


def _lm_eval_input(context: list[int], continuation: list[int], max_length: int) -> list[int]:
    """What HFLM._loglikelihood_tokens feeds the model for one request (its own left cut)."""
    return (context + continuation)[-(max_length + 1):][:-1]


# lm-eval refuses continuations longer than max_length.
LENGTHS = [
    (max_length, context_length, continuation_length)
    for max_length in (1, 2, 5, 9)
    for context_length in (1, 2, 3, 8, 20)
    for continuation_length in (1, 2, 4)
    if continuation_length <= max_length
]


@pytest.mark.parametrize(("max_length", "context_length", "continuation_length"), LENGTHS)
def test_truncated_contexts_keep_the_sink_and_the_newest_tokens(max_length, context_length, continuation_length):
    context = [SINK] + list(range(10, 10 + context_length - 1))
    continuation = list(range(100, 100 + continuation_length))
    kept = truncate_context(context, continuation_length, max_length, SINK)
    fed = _lm_eval_input(kept, continuation, max_length)
    assert fed[0] == SINK
    assert len(fed) == min(max_length, context_length + continuation_length - 1)
    if context_length + continuation_length <= max_length + 1:
        assert kept == context  # fits: lm-eval's own row, untouched
    else:  # the sink, then the newest max_length - 1 tokens lm-eval would have fed after it
        newest = (context[1:] + continuation)[:-1]
        assert fed == [SINK] + newest[len(newest) - (max_length - 1):]


def test_contexts_without_the_sink_are_left_as_lm_eval_cuts_them():
    context = list(range(10, 30))
    assert truncate_context(context, 2, 8, SINK) == context


def _left_padded(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    return ids, mask


@pytest.mark.parametrize("width", [1, 2, 3, 6])
def test_left_padded_prompts_keep_their_sink_when_cut(width):
    rows = [[SINK] + list(range(10, 10 + length)) for length in (0, 1, 4, 9)] + [list(range(40, 47))]
    ids, mask = _left_padded(rows)
    cut_ids, cut_mask = truncate_left_padded(ids, mask, width, SINK, pad_token_id=0)
    assert cut_ids.shape == cut_mask.shape == (len(rows), width)
    for row, ids_row, mask_row in zip(rows, cut_ids.tolist(), cut_mask.tolist()):
        real = [token for token, keep in zip(ids_row, mask_row) if keep]
        assert mask_row == sorted(mask_row)  # still left-padded
        if len(row) <= width:
            assert real == row
        elif row[0] == SINK:
            assert real == [SINK] + row[len(row) - width + 1:]
        else:
            assert real == row[-width:]  # no sink to keep: lm-eval's cut


@pytest.mark.parametrize("max_length", [2, 3, 4, 7, 16])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 6, 15, 16, 17, 40])
def test_rolling_windows_predict_every_token_once_with_the_sink_first(max_length, length):
    tokens = list(range(10, 10 + length))
    windows = rolling_windows(tokens, SINK, max_length)
    predicted = [token for _, continuation in windows for token in continuation]
    assert predicted == tokens
    position = 0
    for context, continuation in windows:
        row = (context + continuation)[:-1]
        assert row[0] == SINK and SINK not in row[1:]
        assert len(row) <= max_length
        assert context[1:] == tokens[position - len(context) + 1 : position]  # the tokens right before
        position += len(continuation)
    if 0 < length <= max_length - 1:
        assert windows == [([SINK], tokens)]  # lm-eval's own single window


def test_rolling_windows_need_room_for_the_sink_and_a_context_token():
    with pytest.raises(ValueError, match="max_length: got 1"):
        rolling_windows([10, 11], SINK, 1)
