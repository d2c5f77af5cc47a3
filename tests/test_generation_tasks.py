"""Generation tasks: loading prompts and chat messages with references, multi-turn rendering, formats and stop tokens."""

from __future__ import annotations

import csv
import json

import pytest
from generation_support import arithmetic_rows, generation_tokenizer

from scoring_support import write_jsonl
from zerotuning.generation import prepare_generation
from zerotuning.generation.formats import resolve_format
from zerotuning.generation.prepared import conversation
from zerotuning.scoring.prepared_task import prepare_task
from zerotuning.tasks import SplitPlan, TaskRequest, load_task


def _task(tmp_path, rows, **request):
    path = write_jsonl(rows, tmp_path / "gen.jsonl")
    return load_task(TaskRequest(source=str(path), **request))


def test_jsonl_generation_rows_load_with_the_usual_split_handling(tmp_path):
    rows = arithmetic_rows(60)
    task = _task(tmp_path, rows, splits=SplitPlan(seed=2))
    assert task.spec.kind == "generation" and task.spec.instruction == ""
    assert task.split_sizes() == {"demo": 6, "calibration": 27, "test": 27}
    by_id = {row["id"]: row for row in rows}
    for example in task.examples:
        row = by_id[example.id]
        assert example.answer == -1
        if "prompt" in row:
            assert example.messages == (("user", row["prompt"]),) and example.references == tuple(row["references"]) and example.pattern == ""
        else:
            assert [m[0] for m in example.messages] == ["user", "assistant", "user"] and example.pattern == row["pattern"]
    again = _task(tmp_path, rows, splits=SplitPlan(seed=2))
    assert [e.id for e in again.split("test")] == [e.id for e in task.split("test")]


def test_csv_generation_rows_with_json_messages_and_a_single_reference(tmp_path):
    path = tmp_path / "chat.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "conversation", "gold", "split"])
        writer.writeheader()
        writer.writerow({"id": "a", "conversation": json.dumps([{"role": "system", "content": "Be brief ."}, {"role": "user", "content": "What is 2 ?"}]), "gold": "2", "split": "test"})
        writer.writerow({"id": "b", "conversation": json.dumps([{"role": "user", "content": "What is 3 ?"}]), "gold": '["3", "3 ."]', "split": "calibration"})
    from zerotuning.tasks import ColumnMapping

    task = load_task(TaskRequest(source=str(path), kind="generation", columns=ColumnMapping(messages="conversation", references="gold"), splits=SplitPlan(column="split")))
    assert task.split("test")[0].messages == (("system", "Be brief ."), ("user", "What is 2 ?"))
    assert task.split("test")[0].references == ("2",)
    assert task.split("calibration")[0].references == ("3", "3 .")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "q", "messages": [{"role": "user", "content": "q"}], "references": "a"}, "exactly one of the columns 'prompt'.*got both"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "references": "a"}, "the last turn must be the user's"),
        ({"messages": [{"role": "robot", "content": "q"}], "references": "a"}, "turn 0: role 'robot'"),
        ({"messages": [{"role": "user", "content": ""}], "references": "a"}, "turn 0: content must be non-empty"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "references": "a"}, "system message may only be the first"),
        ({"messages": "not json", "references": "a"}, "must be a list"),
        ({"prompt": "q", "references": []}, "expected a non-empty answer"),
        ({"prompt": "q", "references": ["a", " "]}, "expected a non-empty answer"),
        ({"prompt": "q", "references": "a", "pattern": "(unclosed"}, "not a valid regular expression"),
    ],
)
def test_bad_generation_rows_name_the_file_row_and_column(tmp_path, row, message):
    rows = [{"prompt": "fine", "references": "ok"}, row]
    with pytest.raises(ValueError, match=message) as caught:
        _task(tmp_path, rows, kind="generation", splits=SplitPlan(fractions={"test": 1.0}))
    assert "gen.jsonl" in str(caught.value) and "row 1" in str(caught.value)


def test_generation_kind_is_inferred_from_references(tmp_path):
    task = _task(tmp_path, [{"prompt": "q", "references": "a"}] * 2 + [{"messages": [{"role": "user", "content": "q"}], "references": "b"}], splits=SplitPlan(fractions={"test": 1.0}))
    assert task.spec.kind == "generation"


def test_multi_turn_chat_rendering_with_instruction_and_demonstrations(tmp_path):
    tokenizer = generation_tokenizer()
    rows = [
        {"id": "d", "split": "demo", "prompt": "What is 1 plus 1 ?", "references": ["2"]},
        {"id": "c", "split": "calibration", "prompt": "What is 2 plus 2 ?", "references": ["4"]},
        {"id": "t", "split": "test", "messages": [
            {"role": "system", "content": "You are helpful ."},
            {"role": "user", "content": "What is 3 plus 4 ?"},
            {"role": "assistant", "content": "7"},
            {"role": "user", "content": "Now add 2 to that ."},
        ], "references": ["9", "9 ."]},
    ]
    task = _task(tmp_path, rows, instruction="Reply with a number only .", splits=SplitPlan(column="split"))
    example = task.split("test")[0]
    turns = conversation(task, example, tuple(task.split("demo")))
    assert turns == (
        ("system", "You are helpful ."),
        ("user", "Reply with a number only .\nWhat is 1 plus 1 ?"),
        ("assistant", "2"),
        ("user", "What is 3 plus 4 ?"),
        ("assistant", "7"),
        ("user", "Now add 2 to that ."),
    )
    prepared = prepare_generation(task, tokenizer, chat_template="on", shots=1, seed=0)
    assert prepared.prompt_format.name == "chat" and not prepared.prompt_format.add_special_tokens
    test_set = prepared.sets["test"]
    tokens = tokenizer.convert_ids_to_tokens(list(test_set.prompt_ids[0]))
    assert tokens[:2] == ["<s>", "<|system|>"] and tokens.count("<s>") == 1  # the template's BOS, never a second one
    assert tokens[-1] == "<|assistant|>" and tokens.count("<|user|>") == 3 and tokens.count("<|assistant|>") == 3
    assert "7" in tokens and "\n" in tokens  # the given first answer and the instruction's line break are in the context
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    assert test_set.reference_ids[0] == ((tokenizer.convert_tokens_to_ids("9"), end), (tokenizer.convert_tokens_to_ids("9"), tokenizer.convert_tokens_to_ids("."), end))
    assert end in prepared.prompt_format.stop_token_ids and tokenizer.eos_token_id in prepared.prompt_format.stop_token_ids
    assert prepared.summary()["prompt_format"]["end_of_turn"] == " <|end|>"


def test_plain_format_and_auto_without_a_template(tmp_path):
    tokenizer = generation_tokenizer(chat=False)
    with pytest.raises(ValueError, match="has no chat template; use --chat-template off"):
        resolve_format(tokenizer, "on")
    fmt = resolve_format(tokenizer, "auto")
    assert fmt.name == "plain" and fmt.add_special_tokens
    newline = tokenizer.convert_tokens_to_ids("\n")
    assert set(fmt.stop_token_ids) == {newline, tokenizer.eos_token_id}
    messages = (("user", "What is 3 plus 4 ?"), ("assistant", "7"), ("user", "Now add 2 to that ."))
    assert fmt.prompt_text(messages) == "Question: What is 3 plus 4 ?\nAnswer: 7\nQuestion: Now add 2 to that .\nAnswer:"
    rows = [{"id": str(i), "split": split, "messages": [{"role": r, "content": c} for r, c in messages], "references": "9"} for i, split in enumerate(["calibration", "test"])]
    prepared = prepare_generation(_task(tmp_path, rows, splits=SplitPlan(column="split")), tokenizer, chat_template="auto")
    ids = prepared.sets["test"].prompt_ids[0]
    assert ids[0] == tokenizer.bos_token_id and list(ids).count(tokenizer.bos_token_id) == 1
    assert prepared.sets["test"].reference_ids[0] == ((tokenizer.convert_tokens_to_ids("9"), newline),)
    assert fmt.answer_of([tokenizer.convert_tokens_to_ids("9"), newline, 5]) == ("9", True, 2)
    assert fmt.answer_of([tokenizer.convert_tokens_to_ids("9")] * 3) == ("9 9 9", False, 3)


def test_chat_answers_end_at_the_turn_end_token():
    tokenizer = generation_tokenizer()
    fmt = resolve_format(tokenizer, "auto")
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    nine = tokenizer.convert_tokens_to_ids("9")
    assert fmt.name == "chat"
    assert fmt.answer_of([nine, end, nine]) == ("9", True, 2)
    assert fmt.answer_of([end]) == ("", True, 1)
    assert resolve_format(tokenizer, "on").name == "chat" and resolve_format(tokenizer, "off").name == "plain"
    with pytest.raises(ValueError, match="--chat-template: got .markdown., expected one of"):
        resolve_format(tokenizer, "markdown")


def test_answer_token_scoring_and_lm_eval_export_refuse_generation_tasks(tmp_path):
    from zerotuning.lm_eval.task_export import export_task

    task = _task(tmp_path, arithmetic_rows(20))
    with pytest.raises(ValueError, match="generation task"):
        prepare_task(task, generation_tokenizer())
    with pytest.raises(ValueError, match="generation task"):
        export_task(task, tmp_path / "out")
