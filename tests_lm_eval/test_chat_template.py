"""lm-eval's --apply_chat_template through ZeroTuningLM: every templated row starts with one BOS, and the BOS is the sink.

lm-eval renders each request through the tokenizer's chat template and encodes a text that starts
with the BOS string without special tokens (``has_bos_prefix`` in ``tok_encode`` and
``tok_batch_encode``), so a template that writes the BOS itself gives one BOS, not two; a template
that does not is encoded with the tokenizer's own BOS in front. Both are checked here on the rows
the model actually receives (``forward_log.py``), for loglikelihood and generation requests, with
few-shot examples as earlier turns (``fewshot_as_multiturn``).
"""

from __future__ import annotations

import pytest

from zerotuning import Profile
from zerotuning.lm_eval import evaluate

from conftest import TASK_NAMES
from forward_log import ForwardLog

TEMPLATED = [TASK_NAMES["loglikelihood"], TASK_NAMES["generate_until"]]


def _chat_tokenizer(writes_bos: bool):
    from generation_support import CHAT_TEMPLATE, generation_tokenizer

    tokenizer = generation_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE if writes_bos else CHAT_TEMPLATE.removeprefix("{{ bos_token }}")
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.mark.parametrize("writes_bos", [True, False], ids=["template-writes-bos", "tokenizer-adds-bos"])
def test_chat_templated_rows_start_with_one_bos_which_is_the_sink(task_dir, writes_bos):
    from generation_support import generation_lm

    tokenizer = _chat_tokenizer(writes_bos)
    model = generation_lm(tokenizer)
    bos, user, assistant = (tokenizer.convert_tokens_to_ids(token) for token in ("<s>", "<|user|>", "<|assistant|>"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        log = ForwardLog(model, monkeypatch)
        results = evaluate(
            model, tokenizer, Profile.uniform(model, 2.0), TEMPLATED, include_path=str(task_dir), batch_size=3, limit=4,
            num_fewshot=1, apply_chat_template=True, fewshot_as_multiturn=True,
        )
    prompts = [call for call in log.calls if not call["decoding"]]
    assert prompts and any(call["attention_mask"] is not None for call in prompts), "loglikelihood and generation rows"
    for call in prompts:
        sinks = call["sinks"]["full"]
        for row, ids in enumerate(call["input_ids"]):
            mask = None if call["attention_mask"] is None else call["attention_mask"][row]
            real = ids if mask is None else [token for token, keep in zip(ids, mask) if keep]
            first = 0 if mask is None else mask.index(1)
            assert sinks[row] == first and ids[first] == bos, f"row {ids}: the sink is not the BOS"
            assert real.count(bos) == 1, f"row {ids}: {real.count(bos)} BOS tokens"
            assert real[1] == user and real.count(user) == 2 and assistant in real, "the rendered chat: one demonstration turn, then the request"
    for request_type in ("loglikelihood", "generate_until"):
        counts = results["zerotuning"]["sink_rows"][request_type]
        assert counts["rows"] > 0 and counts["rows_not_starting_with_bos"] == 0, request_type
