"""Option tasks through the tokenizer's chat template: rendering, one sink token first, answer tokens, and the CLI record."""

from __future__ import annotations

import json

import pytest
from generation_support import CHAT_TEMPLATE, generation_lm, generation_tokenizer, save_generation_model_folder

from scoring_support import sentiment_rows, write_jsonl
from sink_capture import scored_batch_sinks
from zerotuning import Profile
from zerotuning.cli import main
from zerotuning.scoring import prepare_task
from zerotuning.scoring.option_format import resolve_option_format
from zerotuning.scoring.scorer import pad_id_of
from zerotuning.tasks import SplitPlan, TaskRequest, load_task, render_messages, render_prompt

FRACTIONS = {"demo": 0.2, "calibration": 0.4, "test": 0.4}
# The same turns, but the template does not write the BOS: the tokenizer's own BOS comes first.
TEMPLATE_WITHOUT_BOS = CHAT_TEMPLATE.removeprefix("{{ bos_token }}")


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    path = write_jsonl(sentiment_rows(30, seed=1), tmp_path_factory.mktemp("data") / "reviews.jsonl")
    return load_task(TaskRequest(source=str(path), splits=SplitPlan(fractions=FRACTIONS)))


def test_messages_hold_the_plain_prompt_as_turns(task):
    demos, example = tuple(task.split("demo")[:2]), task.split("test")[0]
    messages = render_messages(task.spec, example, demos)
    assert [role for role, _ in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[0][1].startswith(task.spec.instruction + "\n") and task.spec.instruction not in messages[2][1]
    assert messages[1][1] == task.spec.labels[demos[0].answer]  # the answer alone, no leading space
    plain = render_prompt(task.spec, example, demos)
    assert plain == "\n\n".join([messages[0][1] + " " + messages[1][1], messages[2][1] + " " + messages[3][1], messages[4][1]])


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, TEMPLATE_WITHOUT_BOS], ids=["template-writes-bos", "tokenizer-adds-bos"])
def test_chat_prompts_start_with_one_sink_token_which_the_backend_uses(task, template):
    tokenizer = generation_tokenizer()
    tokenizer.chat_template = template
    prepared = prepare_task(task, tokenizer, shots=2, seed=0, chat_template="on")
    bos = tokenizer.bos_token_id
    assert prepared.prompt_format.name == "chat" and prepared.prompt_format.add_special_tokens == (template == TEMPLATE_WITHOUT_BOS)
    for ids in prepared.sets["test"].token_ids:
        assert ids[0] == bos and ids.count(bos) == 1
        assert tokenizer.convert_ids_to_tokens(list(ids[-4:])) == ["Answer", ":", "<|end|>", "<|assistant|>"]  # the answer comes next
        assert tokenizer.convert_ids_to_tokens(list(ids)).count("<|user|>") == 3  # two demonstrations, then the example
    token_lists = list(prepared.sets["test"].token_ids)
    assert len({len(ids) for ids in token_lists}) > 1, "rows of different lengths: some are left-padded"
    input_ids, sink_index = scored_batch_sinks(generation_lm(tokenizer), token_lists, pad_id_of(tokenizer))
    for row, ids in enumerate(token_lists):
        assert sink_index[row] == input_ids.shape[1] - len(ids), "the sink is the row's first real token"
        assert input_ids[row, sink_index[row]] == bos


def test_answers_are_read_right_after_the_assistant_header_without_a_space(task):
    tokenizer = generation_tokenizer()
    chat = prepare_task(task, tokenizer, chat_template="on")
    plain = prepare_task(task, tokenizer)
    assert chat.prompt_format.answer_prefix == "" and chat.prompt_format.answer_cue.endswith("<|assistant|> ")
    assert chat.example_prompt.endswith("\nAnswer: <|end|> <|assistant|> ")
    # The word-level tokenizer drops spaces, so both spellings give the label word's token: the canonical one is bare.
    assert chat.answer_tokens.token_ids == tuple(tokenizer.convert_tokens_to_ids(list(task.spec.labels)))
    assert plain.prompt_format.name == "plain" and plain.example_prompt == render_prompt(task.spec, task.split("calibration")[0])
    assert plain.sets["test"].token_ids[0][0] == tokenizer.bos_token_id


def test_chat_template_values(task):
    tokenizer = generation_tokenizer(chat=False)
    assert prepare_task(task, tokenizer, chat_template="auto").prompt_format.name == "plain"  # no template: plain
    with pytest.raises(ValueError, match="--chat-template on: the tokenizer .* has no chat template; use --chat-template off"):
        prepare_task(task, tokenizer, chat_template="on")
    with pytest.raises(ValueError, match="--chat-template: got 'yes', expected one of"):
        resolve_option_format(tokenizer, "yes")
    assert resolve_option_format(generation_tokenizer(), "auto").name == "chat"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("chatcli")
    model = save_generation_model_folder(root / "tiny-chat")
    return root, model, write_jsonl(sentiment_rows(40, seed=1), root / "reviews.jsonl")


def _tune(root, model, data, name, *extra):
    out = root / name
    assert main(["tune", "--model", str(model), "--task", str(data), "--search", "levels", "--levels", "0", "--batch-size", "16",
                 "--bootstrap-resamples", "100", "--out", str(out), *extra]) == 0
    return out


def test_tune_records_the_template_and_evaluate_reuses_or_overrides_it(workspace, capsys):
    root, model, data = workspace
    default = _tune(root, model, data, "default")
    results = json.loads((default / "results.json").read_text())
    assert results["settings"]["chat_template"] == "off" and results["task"]["prompt_format"]["name"] == "plain"  # unchanged default
    assert "Answer:" in results["task"]["example_prompt"] and "<|user|>" not in results["task"]["example_prompt"]
    chat = _tune(root, model, data, "chat", "--chat-template", "on")
    printed = capsys.readouterr().out
    assert "prompts: the tokenizer's chat template (--chat-template on)" in printed
    results = json.loads((chat / "results.json").read_text())
    assert results["settings"]["chat_template"] == "on" and results["task"]["prompt_format"]["name"] == "chat"
    assert results["task"]["example_prompt"].startswith("<s><|user|>")
    record = Profile.from_pretrained(chat).metadata["zerotuning"]
    assert record["settings"]["chat_template"] == "on" and record["prompt_format"] == "chat"
    assert "| chat template | yes (the tokenizer's chat template) |" in (chat / "README.md").read_text()
    assert "| chat template | no (plain prompts) |" in (default / "README.md").read_text()

    assert main(["evaluate", "--profile", str(chat), "--bootstrap-resamples", "100", "--out", str(root / "reused.json")]) == 0
    reused = json.loads((root / "reused.json").read_text())
    assert reused["settings"]["chat_template"] == "on" and reused["task"]["prompt_format"]["name"] == "chat" and reused["overrides"] == {}
    assert reused["test"]["methods"]["tuned"]["accuracy"] == results["test"]["methods"]["tuned"]["accuracy"]
    assert main(["evaluate", "--profile", str(chat), "--chat-template", "off", "--bootstrap-resamples", "100", "--out", str(root / "plain.json")]) == 0
    overridden = json.loads((root / "plain.json").read_text())
    assert overridden["task"]["prompt_format"]["name"] == "plain"
    assert overridden["overrides"] == {"chat_template": {"profile": "on", "used": "off"}}


def test_also_generation_keeps_the_profiles_template_for_the_evaluated_task(workspace, capsys):
    from generation_support import arithmetic_rows

    root, model, data = workspace
    chat = root / "chat" if (root / "chat").exists() else _tune(root, model, data, "chat", "--chat-template", "on")
    generation = write_jsonl(arithmetic_rows(20), root / "sums.jsonl")
    assert main(["evaluate", "--profile", str(chat), "--also-generation", str(generation), "--chat-template", "off", "--max-new-tokens", "2",
                 "--bootstrap-resamples", "100", "--out", str(root / "collateral.json")]) == 0
    evaluation = json.loads((root / "collateral.json").read_text())
    assert evaluation["task"]["prompt_format"]["name"] == "chat" and evaluation["overrides"] == {}
    assert evaluation["also_generation"]["task"]["prompt_format"]["name"] == "plain"
