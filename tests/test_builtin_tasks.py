"""The built-in task files: schema, sizes, splits, balance, duplicates, and exact regeneration."""

import collections
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "zerotuning" / "tasks" / "data"
TASKS = {"sentiment": "classification", "capitals": "multiple_choice", "elements": "multiple_choice"}
MULTIPLE_CHOICE = [name for name, kind in TASKS.items() if kind == "multiple_choice"]
SPLIT_SHARES = {"demo": 0.10, "calibration": 0.40, "test": 0.50}
DESCRIPTION_KEYS = {"name", "kind", "description", "instruction", "input_name", "provenance", "license"}
ROW_KEYS = {
    "classification": {"id", "split", "text", "label"},
    "multiple_choice": {"id", "split", "question", "choices", "answer"},
}


def read_rows(name: str) -> list[dict]:
    lines = (DATA_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def read_description(name: str) -> dict:
    return json.loads((DATA_DIR / f"{name}.task.json").read_text(encoding="utf-8"))


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


@pytest.mark.parametrize("name", TASKS)
def test_description_schema(name):
    description = read_description(name)
    kind = TASKS[name]
    expected_keys = DESCRIPTION_KEYS | ({"labels"} if kind == "classification" else set())
    assert set(description) == expected_keys
    assert description["name"] == name and description["kind"] == kind
    assert description["license"] == "Apache-2.0"
    assert all(isinstance(description[key], str) and description[key].strip() for key in DESCRIPTION_KEYS)
    if kind == "classification":
        assert description["labels"] == ["negative", "positive"]


@pytest.mark.parametrize("name", TASKS)
def test_row_schema_and_ids(name):
    kind = TASKS[name]
    rows = read_rows(name)
    assert len(rows) >= 300
    for row in rows:
        assert set(row) == ROW_KEYS[kind], row
        assert re.fullmatch(rf"{name}-\d{{4}}", row["id"]), row["id"]
        assert row["split"] in SPLIT_SHARES
        if kind == "classification":
            assert row["label"] in read_description(name)["labels"] and row["text"].strip()
        else:
            assert isinstance(row["question"], str) and row["question"].strip()
            assert isinstance(row["choices"], list) and len(row["choices"]) == 4
            assert all(isinstance(choice, str) and choice.strip() for choice in row["choices"])
            assert type(row["answer"]) is int and 0 <= row["answer"] < 4
    assert len({row["id"] for row in rows}) == len(rows)


@pytest.mark.parametrize("name", TASKS)
def test_split_shares(name):
    rows = read_rows(name)
    counts = collections.Counter(row["split"] for row in rows)
    for split, share in SPLIT_SHARES.items():
        assert abs(counts[split] / len(rows) - share) < 0.02, (split, counts)


@pytest.mark.parametrize("name", TASKS)
def test_no_duplicate_inputs_within_or_across_splits(name):
    field = "text" if TASKS[name] == "classification" else "question"
    inputs = [" ".join(words(row[field])) for row in read_rows(name)]
    duplicates = [text for text, count in collections.Counter(inputs).items() if count > 1]
    assert not duplicates


def test_sentiment_labels_balanced_in_every_split():
    rows = read_rows("sentiment")
    for split in SPLIT_SHARES:
        labels = collections.Counter(row["label"] for row in rows if row["split"] == split)
        assert labels["positive"] == labels["negative"] > 0, (split, labels)


def test_sentiment_reviews_have_sane_lengths_and_no_near_duplicates():
    texts = [row["text"] for row in read_rows("sentiment")]
    lengths = [len(text.split()) for text in texts]
    assert min(lengths) >= 6 and max(lengths) <= 40
    assert all(text.isascii() for text in texts)
    word_sets = [set(words(text)) for text in texts]
    # Jaccard overlap of word sets: near-identical rewrites score well above 0.5.
    close = [
        (texts[i], texts[j])
        for i, j in itertools.combinations(range(len(texts)), 2)
        if len(word_sets[i] & word_sets[j]) / len(word_sets[i] | word_sets[j]) >= 0.5
    ]
    assert not close


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_choices_unique_and_answer_not_in_the_question(name):
    for row in read_rows(name):
        assert len(set(row["choices"])) == len(row["choices"]), row
        correct = row["choices"][row["answer"]]
        assert not re.search(rf"\b{re.escape(correct.lower())}\b", row["question"].lower()), row


def test_capital_names_do_not_echo_the_place():
    # "Tunis" for Tunisia or "Guangzhou" for Guangdong would give the answer away.
    for row in read_rows("capitals"):
        prefix = words(row["choices"][row["answer"]])[0][:4]
        assert not any(word.startswith(prefix) for word in words(row["question"])), row


@pytest.mark.parametrize("name", MULTIPLE_CHOICE)
def test_answer_letters_balanced_in_every_split(name):
    rows = read_rows(name)
    for split in SPLIT_SHARES:
        letters = collections.Counter(row["answer"] for row in rows if row["split"] == split)
        assert set(letters) == {0, 1, 2, 3}
        assert max(letters.values()) - min(letters.values()) <= 1, (split, letters)


def test_elements_questions_about_one_element_share_a_split():
    splits_by_element = collections.defaultdict(set)
    for row in read_rows("elements"):
        asked_by_name = re.fullmatch(r"What is the chemical symbol for (\w+)\?", row["question"])
        element = asked_by_name.group(1) if asked_by_name else row["choices"][row["answer"]].lower()
        splits_by_element[element].add(row["split"])
    assert len(splits_by_element) == 118
    assert all(len(splits) == 1 for splits in splits_by_element.values())


def test_regeneration_reproduces_the_files_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_builtin_tasks.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    generated = sorted(path.name for path in tmp_path.iterdir())
    assert generated == sorted(f"{name}{suffix}" for name in TASKS for suffix in (".jsonl", ".task.json"))
    for file_name in generated:
        assert (tmp_path / file_name).read_bytes() == (DATA_DIR / file_name).read_bytes(), file_name


@pytest.mark.parametrize("name", TASKS)
def test_task_loader_reads_the_builtin(name):
    from zerotuning.tasks import TaskRequest, load_task

    task = load_task(TaskRequest(source=name))
    rows = read_rows(name)
    assert task.spec.kind == TASKS[name]
    assert task.split_sizes() == {split: sum(row["split"] == split for row in rows) for split in SPLIT_SHARES}
