"""A zerotuning task exported as an lm-eval task gives lm-eval exactly zerotuning's prompts."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from zerotuning import Profile
from zerotuning.cli import main
from zerotuning.lm_eval import evaluate, export_task
from zerotuning.tasks.loader import TaskRequest, load_task
from zerotuning.tasks.prompts import answer_text, render_prompt

from scoring_support import tiny_lm, word_tokenizer


def _samples(task_name: str, folder, **options) -> list[dict]:
    tokenizer = word_tokenizer()
    model = tiny_lm(tokenizer)
    results = evaluate(model, tokenizer, Profile.neutral(model), [task_name], include_path=str(folder), log_samples=True, **options)
    return results["samples"][task_name]


@pytest.mark.parametrize("builtin", ["sentiment", "capitals"])
def test_zero_shot_prompts_and_answers_are_zerotunings(builtin, tmp_path):
    task = load_task(TaskRequest(source=builtin))
    yaml_path = export_task(task, tmp_path)
    assert yaml_path.name == f"zerotuning_{builtin}.yaml"
    test = {example.id: example for example in task.split("test")}
    rows = [json.loads(line) for line in (tmp_path / f"zerotuning_{builtin}_test.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == list(test)
    samples = _samples(yaml_path.stem, tmp_path, limit=4)
    assert len(samples) == 4
    for sample in samples:
        example = test[sample["doc"]["id"]]
        contexts = {arguments["arg_0"] if isinstance(arguments, dict) else arguments[0] for arguments in _arguments(sample)}
        assert contexts == {render_prompt(task.spec, example)}
        continuations = [arguments["arg_1"] if isinstance(arguments, dict) else arguments[1] for arguments in _arguments(sample)]
        assert continuations[example.answer] == " " + answer_text(task.spec, example)
        assert sample["target"] in (example.answer, str(example.answer))


def test_few_shot_demonstrations_come_from_the_demo_split(tmp_path):
    task = load_task(TaskRequest(source="sentiment"))
    export_task(task, tmp_path)
    without_instruction = replace(task.spec, instruction="")
    demos = {render_prompt(without_instruction, example) + " " + answer_text(task.spec, example) for example in task.split("demo")}
    test = {example.id: example for example in task.split("test")}
    for sample in _samples("zerotuning_sentiment", tmp_path, limit=3, num_fewshot=2):
        context = _arguments(sample)[0][0]
        instruction, _, body = context.partition("\n")
        assert instruction == task.spec.instruction
        *shots, query = body.split("\n\n")
        assert len(shots) == 2 and set(shots) <= demos
        assert query == render_prompt(task.spec, test[sample["doc"]["id"]]).partition("\n")[2]


def test_existing_files_are_refused_and_the_command_writes_them(tmp_path, capsys):
    sizes = load_task(TaskRequest(source="sentiment")).split_sizes()
    assert main(["lm-eval-task", "--task", "sentiment", "--out", str(tmp_path)]) == 0
    assert f"zerotuning_sentiment: {sizes['test']} test, {sizes['demo']} few-shot examples" in capsys.readouterr().out
    assert main(["lm-eval-task", "--task", "sentiment", "--out", str(tmp_path)]) == 2
    assert "already exist" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected an lm-eval task name"):
        export_task(load_task(TaskRequest(source="sentiment")), tmp_path, name="9-bad")


def _arguments(sample: dict) -> list:
    """(context, continuation) per request, before or after lm-eval's sanitising of the samples file."""
    arguments = sample["arguments"]
    return list(arguments.values()) if isinstance(arguments, dict) else arguments
