"""Task loading (built-in format, local JSONL/CSV/TSV, hub), column mapping, splits and prompt templates."""

from __future__ import annotations

import csv
import json
import sys
import types

import pytest

from zerotuning.tasks import (
    ColumnMapping,
    SplitPlan,
    TaskRequest,
    builtin_task_names,
    draw_demonstrations,
    load_task,
    render_prompt,
)
from zerotuning.tasks import builtin as builtin_module
from zerotuning.tasks.hub import HUB_SPLIT_COLUMN

from scoring_support import sentiment_rows, write_jsonl


def _write_csv(path, rows, delimiter=","):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_jsonl_classification_random_split_is_seeded_disjoint_and_complete(tmp_path):
    path = write_jsonl(sentiment_rows(100), tmp_path / "reviews.jsonl")
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(seed=3)))
    assert task.spec.kind == "classification"
    assert task.spec.labels == ("negative", "positive")  # sorted label words
    assert task.split_sizes() == {"demo": 10, "calibration": 45, "test": 45}
    ids = {name: {example.id for example in task.split(name)} for name in ("demo", "calibration", "test")}
    assert not ids["demo"] & ids["calibration"] and not ids["calibration"] & ids["test"] and not ids["demo"] & ids["test"]
    assert len(ids["demo"] | ids["calibration"] | ids["test"]) == 100
    again = load_task(TaskRequest(source=str(path), splits=SplitPlan(seed=3)))
    other = load_task(TaskRequest(source=str(path), splits=SplitPlan(seed=4)))
    assert [e.id for e in again.split("test")] == [e.id for e in task.split("test")]
    assert [e.id for e in other.split("test")] != [e.id for e in task.split("test")]
    by_id = {row["id"]: row for row in sentiment_rows(100)}
    for example in task.examples:
        assert task.spec.labels[example.answer] == by_id[example.id]["label"]
        assert example.text == by_id[example.id]["text"]


def test_split_fractions_and_caps(tmp_path):
    path = write_jsonl(sentiment_rows(60), tmp_path / "reviews.jsonl")
    plan = SplitPlan(fractions={"calibration": 0.5, "test": 0.25}, seed=0, max_examples={"calibration": 20})
    task = load_task(TaskRequest(source=str(path), splits=plan))
    assert task.split_sizes() == {"demo": 0, "calibration": 20, "test": 15}
    assert task.source["splits"]["unused_rows"] == 25


def test_csv_with_numeric_labels_needs_label_words(tmp_path):
    rows = [{"sentence": row["text"], "y": str(int(row["label"] == "positive"))} for row in sentiment_rows(20)]
    path = _write_csv(tmp_path / "reviews.csv", rows)
    columns = ColumnMapping(text="sentence", label="y")
    with pytest.raises(ValueError, match="--labels"):
        load_task(TaskRequest(source=str(path), columns=columns))
    task = load_task(TaskRequest(source=str(path), columns=columns, labels=("negative", "positive"), splits=SplitPlan(fractions={"test": 1.0})))
    by_text = {row["sentence"]: row["y"] for row in rows}
    assert [example.answer for example in task.examples] == [int(by_text[example.text]) for example in task.examples]
    _write_csv(tmp_path / "bad.csv", rows + [{"sentence": "x", "y": "7"}])
    with pytest.raises(ValueError, match=r"row 20: label '7' in column 'y' is neither one of the labels"):
        load_task(TaskRequest(source=str(tmp_path / "bad.csv"), columns=columns, labels=("negative", "positive")))


@pytest.mark.parametrize(
    ("answer_format", "answers", "expected"),
    [
        ("letter", ["B", "c"], [1, 2]),
        ("index", ["1", "0"], [1, 0]),
        ("index1", ["1", "3"], [0, 2]),
        ("text", ["Paris", "Oslo"], [0, 2]),
        ("auto", ["C", "2", "Rome"], [2, 2, 1]),
    ],
)
def test_multiple_choice_tsv_with_option_columns_and_answer_formats(tmp_path, answer_format, answers, expected):
    rows = [
        {"q": f"Which city number {i}?", "o1": "Paris", "o2": "Rome", "o3": "Oslo", "o4": "" if i % 2 else "Bern", "gold": answer, "split": "test"}
        for i, answer in enumerate(answers)
    ]
    path = _write_csv(tmp_path / "cities.tsv", rows, delimiter="\t")
    columns = ColumnMapping(question="q", choice_columns=("o1", "o2", "o3", "o4"), answer="gold", answer_format=answer_format)
    task = load_task(TaskRequest(source=str(path), columns=columns, splits=SplitPlan(column="split")))
    assert task.spec.kind == "multiple_choice"
    assert [example.answer for example in task.examples] == expected
    assert [len(example.choices) for example in task.examples] == [4 if i % 2 == 0 else 3 for i in range(len(answers))]
    assert task.answer_strings() == ("A", "B", "C", "D")


def test_multiple_choice_answer_errors_name_row_and_value(tmp_path):
    path = write_jsonl([{"question": "q?", "choices": ["x", "y"], "answer": "E"}], tmp_path / "mc.jsonl")
    with pytest.raises(ValueError, match=r"row 0: answer 'E' in column 'answer' is not a valid auto answer"):
        load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"test": 1.0})))
    path = write_jsonl([{"question": "q?", "choices": ["x"], "answer": 0}], tmp_path / "one.jsonl")
    with pytest.raises(ValueError, match="expected 2 to 26 choices"):
        load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions={"test": 1.0})))


def test_split_column_with_mapping_and_unknown_values(tmp_path):
    rows = [{**row, "part": part} for row, part in zip(sentiment_rows(9), ["train", "dev", "eval"] * 3)]
    path = write_jsonl(rows, tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match=r"holds \['dev', 'eval', 'train'\]"):
        load_task(TaskRequest(source=str(path), splits=SplitPlan(column="part")))
    task = load_task(TaskRequest(source=str(path), splits=SplitPlan(column="part", mapping={"dev": "calibration", "eval": "test"})))
    assert task.split_sizes() == {"demo": 0, "calibration": 3, "test": 3}
    assert task.source["splits"]["unused_rows"] == 3
    with pytest.raises(ValueError, match="either a split column"):
        SplitPlan(column="part", fractions={"test": 1.0})
    with pytest.raises(ValueError, match="sum to 1.2"):
        SplitPlan(fractions={"calibration": 0.6, "test": 0.6})


def test_bad_sources_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task(TaskRequest(source=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ValueError, match="not a built-in task"):
        load_task(TaskRequest(source="no-such-task"))
    (tmp_path / "broken.jsonl").write_text('{"text": "a", "label": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_task(TaskRequest(source=str(tmp_path / "broken.jsonl")))
    write_jsonl([{"id": "a", "text": "t", "label": "x"}, {"id": "a", "text": "u", "label": "y"}], tmp_path / "dup.jsonl")
    with pytest.raises(ValueError, match="id 'a' appears twice"):
        load_task(TaskRequest(source=str(tmp_path / "dup.jsonl"), splits=SplitPlan(fractions={"test": 1.0})))


def test_builtin_format_is_read_from_the_data_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin_module, "DATA_DIR", tmp_path)
    (tmp_path / "toy.task.json").write_text(json.dumps({
        "name": "toy", "kind": "multiple_choice", "description": "d", "instruction": "Pick one.",
        "input_name": "Question", "provenance": "made up", "license": "CC0",
    }))
    write_jsonl([
        {"id": "q1", "split": "demo", "question": "1+1?", "choices": ["2", "3"], "answer": 0},
        {"id": "q2", "split": "calibration", "question": "2+1?", "choices": ["2", "3", "4"], "answer": 1},
        {"id": "q3", "split": "test", "question": "2+2?", "choices": ["4", "5"], "answer": 0},
    ], tmp_path / "toy.jsonl")
    assert builtin_task_names() == ["toy"]
    task = load_task(TaskRequest(source="toy"))
    assert task.spec.instruction == "Pick one." and task.spec.license == "CC0"
    assert task.split_sizes() == {"demo": 1, "calibration": 1, "test": 1}
    assert render_prompt(task.spec, task.split("test")[0], task.split("demo")) == (
        "Pick one.\nQuestion: 1+1?\nA. 2\nB. 3\nAnswer: A\n\nQuestion: 2+2?\nA. 4\nB. 5\nAnswer:"
    )


def test_shipped_builtin_tasks_load_and_have_every_split():
    names = builtin_task_names()
    assert "sentiment" in names and len(names) >= 3, names
    for name in names:
        task = load_task(TaskRequest(source=name))
        assert all(size > 0 for size in task.split_sizes().values()), (name, task.split_sizes())
        assert task.spec.provenance and task.spec.license, name


def test_paper_style_zero_shot_and_few_shot_prompts(tmp_path):
    path = write_jsonl(sentiment_rows(40), tmp_path / "r.jsonl")
    task = load_task(TaskRequest(source=str(path)))
    example = task.split("test")[0]
    assert render_prompt(task.spec, example) == (
        "Classify the sentence into one of the following categories: negative or positive.\n"
        f"Sentence: {example.text}\nAnswer:"
    )
    demos = draw_demonstrations(task, 2, seed=5)
    assert demos == draw_demonstrations(task, 2, seed=5) and all(demo.split == "demo" for demo in demos)
    prompt = render_prompt(task.spec, example, demos)
    assert prompt.count("Answer:") == 3 and prompt.endswith(f"Sentence: {example.text}\nAnswer:")
    assert f"Sentence: {demos[0].text}\nAnswer: {task.spec.labels[demos[0].answer]}\n\n" in prompt
    with pytest.raises(ValueError, match="demo split has 4 examples"):
        draw_demonstrations(task, 5, seed=0)


def test_request_round_trips_through_json(tmp_path):
    request = TaskRequest(
        source="x.csv", kind="multiple_choice", columns=ColumnMapping(choice_columns=("a", "b"), answer_format="letter"),
        labels=(), instruction="", splits=SplitPlan(column="s", mapping={"t": "test"}, seed=7, max_examples={"test": 3}),
    )
    assert TaskRequest.from_json(json.loads(json.dumps(request.to_json()))) == request


def _fake_datasets(load_dataset):
    module = types.ModuleType("datasets")
    module.load_dataset = load_dataset
    return module


def test_hub_source_errors_when_unavailable_and_maps_splits_when_available(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # "not installed"
    with pytest.raises(RuntimeError, match="`datasets` library is not installed"):
        load_task(TaskRequest(source="hf:some/dataset"))

    def unreachable(name, config):
        raise ConnectionError("no route to host")

    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(unreachable))
    with pytest.raises(RuntimeError, match="is the hub reachable"):
        load_task(TaskRequest(source="hf:some/dataset"))

    rows = sentiment_rows(12)
    splits = {"train": rows[:4], "validation": rows[4:8], "test": rows[8:]}
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(lambda name, config: splits))
    task = load_task(TaskRequest(source="hf:some/dataset"))
    assert task.spec.name == "some/dataset"
    assert task.split_sizes() == {"demo": 4, "calibration": 4, "test": 4}
    assert task.source["splits"]["column"] == HUB_SPLIT_COLUMN
