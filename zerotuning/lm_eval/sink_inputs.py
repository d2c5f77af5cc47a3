"""Token-level rules that keep the sink (the BOS) first in every row lm-eval builds.

lm-eval's HF model puts the BOS first in most rows already (see docs/lm_eval.md); these helpers
fix the three places where it does not: left truncation of a long loglikelihood context, left
truncation of a long generation prompt, and the windows of a long loglikelihood_rolling document.
Each keeps the sink and drops the oldest tokens after it instead, so that rows keep their length
limit. Rows that do not start with the sink are left exactly as lm-eval made them.
"""

from __future__ import annotations

import torch
from lm_eval import utils


def truncate_context(context: list[int], continuation_length: int, max_length: int, sink: int) -> list[int]:
    """The context lm-eval would cut to fit ``max_length`` model inputs, cut after its sink instead.

    lm-eval feeds ``(context + continuation)[-(max_length + 1):][:-1]``; when that cut reaches
    into the context, this keeps ``context[0]`` (the sink) and the newest tokens that still fit.
    """
    room = max_length + 1 - continuation_length  # context tokens lm-eval keeps
    if len(context) <= room or context[0] != sink:
        return context
    return context[:1] + (context[len(context) - (room - 1):] if room > 1 else [])


def truncate_left_padded(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, width: int, sink: int, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded rows cut to ``width`` columns; a row longer than that keeps its sink first.

    lm-eval keeps the last ``width`` columns, which drops the sink of every longer row.
    """
    rows, masks = [], []
    for ids, mask in zip(input_ids, attention_mask):
        real = ids[mask.bool()]
        if len(real) > width:
            real = torch.cat([real[:1], real[len(real) - width + 1:]]) if real[0] == sink else real[-width:]
        padding = width - len(real)
        rows.append(torch.cat([real.new_full((padding,), pad_token_id), real]))
        masks.append(torch.cat([mask.new_zeros(padding), mask.new_ones(len(real))]))
    return torch.stack(rows), torch.stack(masks)


def rolling_windows(tokens: list[int], sink: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) windows that predict every token of ``tokens`` once, each row starting with ``sink``.

    lm-eval's own windowing (``get_rolling_token_windows`` with one token of context) is used for
    ``max_length - 1`` tokens, and every window after the first gets the sink put in front, so
    no row exceeds ``max_length``. A document of at most ``max_length - 1`` tokens gives lm-eval's
    single window ``[sink] + tokens[:-1]`` unchanged.
    """
    if max_length < 2:
        raise ValueError(f"max_length: got {max_length}, expected >= 2 (the sink and one token of context)")
    windows = [
        utils.make_disjoint_window(window)
        for window in utils.get_rolling_token_windows(token_list=tokens, prefix_token=sink, max_seq_len=max_length - 1, context_len=1)
    ]
    return windows[:1] + [([sink, *context], continuation) for context, continuation in windows[1:]]
