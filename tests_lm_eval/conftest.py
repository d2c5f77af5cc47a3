"""Fixtures for the lm-eval integration tests (run by scripts/test_lm_eval.sh in .venv-lm-eval).

A word-level tokenizer that prepends its BOS, a tiny random Llama sized for it (tests/), and lm-eval
tasks written for these tests: YAMLs over a local JSONL file, found through ``include_path``, one
per request type (loglikelihood with and without a context, loglikelihood_rolling, generate_until).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scoring_support import FILLER_WORDS, NEGATIVE_WORDS, POSITIVE_WORDS, tiny_lm, word_tokenizer  # noqa: E402

TASK_NAMES = {
    "loglikelihood": "zt_test_choice",
    "loglikelihood_no_context": "zt_test_choice_no_context",
    "loglikelihood_rolling": "zt_test_rolling",
    "generate_until": "zt_test_generate",
}
DOCUMENTS = 12


def _documents() -> list[dict]:
    """Reviews of 2 to 40 words (long ones exceed the short max_length the sink tests use)."""
    words = FILLER_WORDS + POSITIVE_WORDS + NEGATIVE_WORDS
    rows = []
    for index in range(DOCUMENTS):
        length = 2 + (index * 7) % 39
        text = " ".join(words[(index * 3 + step * 5) % len(words)] for step in range(length))
        rows.append({"text": text, "label": index % 2})
    return rows


def _task_yaml(name: str, data: Path, output_type: str, body: dict) -> str:
    config = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": output_type,
        **body,
    }
    return json.dumps(config, indent=1)  # JSON is YAML


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    data = folder / "reviews.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in _documents()), encoding="utf-8")
    choice = {
        "doc_to_choice": ["good", "bad"],
        "doc_to_target": "label",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    bodies = {
        "loglikelihood": ("multiple_choice", {"doc_to_text": "Review : {{text}} . Answer :", **choice}),
        "loglikelihood_no_context": ("multiple_choice", {"doc_to_text": "", **choice}),
        "loglikelihood_rolling": (
            "loglikelihood_rolling",
            {"doc_to_text": "", "doc_to_target": "{{text}}", "metric_list": [{"metric": "word_perplexity"}]},
        ),
        "generate_until": (
            "generate_until",
            {
                "doc_to_text": "Review : {{text}} . Answer :",
                "doc_to_target": "good",
                "generation_kwargs": {"until": ["."], "max_gen_toks": 5, "do_sample": False},
                "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}],
            },
        ),
    }
    for request_type, (output_type, body) in bodies.items():
        name = TASK_NAMES[request_type]
        (folder / f"{name}.yaml").write_text(_task_yaml(name, data, output_type, body), encoding="utf-8")
    return folder


@pytest.fixture()
def tokenizer():
    tokenizer = word_tokenizer()
    tokenizer.padding_side = "left"
    return tokenizer


@pytest.fixture()
def model(tokenizer):
    return tiny_lm(tokenizer)
