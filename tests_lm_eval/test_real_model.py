"""The default model (SmolLM2-135M GGUF, whose converted tokenizer needs zerotuning's BOS fix):
every row of every request type starts with its BOS, and a neutral profile matches plain ``hf``."""

from __future__ import annotations

import json

import lm_eval
import numpy as np
import pytest
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from zerotuning import Profile
from zerotuning.lm_eval import evaluate, export_task
from zerotuning.models import load_model
from zerotuning.tasks.loader import TaskRequest, load_task

from forward_log import ForwardLog

pytestmark = pytest.mark.real_model
LIMIT = 4


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2")


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> tuple:
    """The exported sentiment task, plus a rolling and a generation task over its rows."""
    folder = tmp_path_factory.mktemp("smollm2_tasks")
    export_task(load_task(TaskRequest(source="sentiment")), folder)
    data = {"test": str(folder / "zerotuning_sentiment_test.jsonl")}
    common = {"dataset_path": "json", "dataset_kwargs": {"data_files": data}, "test_split": "test"}
    rolling = {"task": "zt_smollm2_rolling", "output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{query}}",
               "metric_list": [{"metric": "word_perplexity"}], **common}
    generate = {"task": "zt_smollm2_generate", "output_type": "generate_until", "doc_to_text": "{{query}}", "doc_to_target": "positive",
                "generation_kwargs": {"until": ["\n"], "max_gen_toks": 3, "do_sample": False},
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}], **common}
    for config in (rolling, generate):
        (folder / f"{config['task']}.yaml").write_text(json.dumps(config))
    return folder, ["zerotuning_sentiment", "zt_smollm2_rolling", "zt_smollm2_generate"]


def test_every_smollm2_row_starts_with_its_bos(smollm2, tasks, monkeypatch):
    model, tokenizer = smollm2
    folder, names = tasks
    bos = tokenizer.bos_token_id
    log = ForwardLog(model, monkeypatch)
    results = evaluate(model, tokenizer, Profile.uniform(model, 1.5), names, include_path=str(folder), limit=LIMIT, batch_size=2)
    for call in (call for call in log.calls if not call["decoding"]):
        for row, ids in enumerate(call["input_ids"]):
            sink = call["sinks"]["full"][row]
            real = ids if call["attention_mask"] is None else [t for t, keep in zip(ids, call["attention_mask"][row]) if keep]
            assert ids[sink] == bos and real.count(bos) == 1, ids[:8]
    for counts in results["zerotuning"]["sink_rows"].values():
        assert counts["rows"] > 0 and counts["rows_not_starting_with_bos"] == 0


def test_neutral_profile_matches_plain_hf_on_smollm2(smollm2, tasks):
    model, tokenizer = smollm2
    folder, names = tasks
    choice_and_generate = [names[0], names[2]]
    plain = lm_eval.simple_evaluate(
        model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=2), tasks=choice_and_generate,
        task_manager=TaskManager(include_path=str(folder)), limit=LIMIT, log_samples=True,
    )["samples"]
    neutral = evaluate(model, tokenizer, Profile.neutral(model), choice_and_generate, include_path=str(folder), limit=LIMIT, batch_size=2, log_samples=True)["samples"]
    scores = lambda samples: np.array([r[0] for s in samples for r in s["filtered_resps"]])  # noqa: E731
    np.testing.assert_allclose(scores(neutral[names[0]]), scores(plain[names[0]]), rtol=0, atol=1e-3)
    assert [s["filtered_resps"] for s in neutral[names[2]]] == [s["filtered_resps"] for s in plain[names[2]]]


def test_smollm2_chat_template_rows_start_with_one_im_start_which_is_the_sink(smollm2, tasks, monkeypatch):
    """SmolLM2's BOS is <|im_start|>, which its template writes at every turn: the row starts with one, never two."""
    model, tokenizer = smollm2
    folder, names = tasks
    bos = tokenizer.bos_token_id
    log = ForwardLog(model, monkeypatch)
    results = evaluate(model, tokenizer, Profile.uniform(model, 1.5), [names[0], names[2]], include_path=str(folder), limit=LIMIT, batch_size=2,
                       apply_chat_template=True)
    prompts = [call for call in log.calls if not call["decoding"]]
    assert any(call["attention_mask"] is not None for call in prompts), "generation rows (left-padded) were logged too"
    for call in prompts:
        for row, ids in enumerate(call["input_ids"]):
            sink = call["sinks"]["full"][row]
            real = ids if call["attention_mask"] is None else [t for t, keep in zip(ids, call["attention_mask"][row]) if keep]
            assert ids[sink] == bos and real[0] == bos and real[1] != bos, ids[:8]
            assert tokenizer.decode(real[:2]) == "<|im_start|>system" and "<|im_start|>assistant\n" in tokenizer.decode(real)
    for request_type in ("loglikelihood", "generate_until"):
        counts = results["zerotuning"]["sink_rows"][request_type]
        assert counts["rows"] > 0 and counts["rows_not_starting_with_bos"] == 0, request_type
