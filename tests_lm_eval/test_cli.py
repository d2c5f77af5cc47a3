"""``zerotuning lm-eval`` and ``zerotuning compare`` end to end on a tiny model folder, and every
refusal before the model loads."""

from __future__ import annotations

import json

import pytest

from zerotuning import Profile
from zerotuning.cli import main

from conftest import TASK_NAMES
from scoring_support import save_tiny_model_folder, tiny_lm, word_tokenizer
from tiny_models import tiny_model

TASK = TASK_NAMES["loglikelihood"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    folder = save_tiny_model_folder(root / "tiny-llama")
    profile = Profile.uniform(tiny_lm(word_tokenizer()), 3.0).save(root / "gamma3.json")
    return root, folder, profile


def _lm_eval(folder, task_dir, *extra):
    return ["lm-eval", "--model", str(folder), "--tasks", TASK, "--include_path", str(task_dir), "--batch_size", "4", *extra]


def test_lm_eval_then_compare_end_to_end(workspace, task_dir, capsys):
    root, folder, profile = workspace
    assert main(_lm_eval(folder, task_dir, "--neutral-profile", "--output_path", str(root / "neutral"), "--log_samples")) == 0
    out = capsys.readouterr().out
    assert "profile neutral" in out and "|zt_test_choice" in out.replace(" ", "") and "wrote " in out
    assert main(_lm_eval(folder, task_dir, "--profile", str(profile), "--output_path", str(root / "tuned"), "--log_samples")) == 0
    (results_file,) = (root / "tuned").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    assert results["zerotuning"]["profile_source"] == str(profile)
    assert results["zerotuning"]["profile"]["gammas"][0][0] == 3.0
    assert results["zerotuning"]["sink_rows"]["loglikelihood"]["rows_not_starting_with_bos"] == 0
    assert results["results"][TASK]["acc,none"] is not None
    capsys.readouterr()
    comparison_file = root / "comparison.json"
    assert main(["compare", str(root / "neutral"), str(root / "tuned"), "--out", str(comparison_file)]) == 0
    table = capsys.readouterr().out
    assert "acc,none" in table and "McNemar" in table
    comparison = json.loads(comparison_file.read_text())
    assert comparison["tasks"][TASK]["samples"] == 12
    assert main(["compare", str(root / "neutral"), str(root / "tuned"), "--out", str(comparison_file)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.fixture()
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model must not load before the options are checked")

    monkeypatch.setattr("zerotuning.models.load_model", refuse)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tasks", "no_such_task"], "Tasks not found: no_such_task"),
        (["--log_samples"], "Specify --output_path"),
        (["--limit", "3", "--samples", '{"zt_test_choice": [0]}'], "--limit must be None"),
        (["--fewshot_as_multiturn"], "apply_chat_template` must be set"),
    ],
)
def test_conflicting_options_are_refused_before_the_model_loads(extra, message, workspace, task_dir, capsys, no_model_load):
    _, folder, _ = workspace
    assert main(_lm_eval(folder, task_dir, "--neutral-profile", *extra)) == 2
    assert message in capsys.readouterr().err


def test_bad_profiles_are_refused_before_the_model_loads(workspace, task_dir, capsys, no_model_load, tmp_path):
    _, folder, _ = workspace
    assert main(_lm_eval(folder, task_dir, "--profile", str(tmp_path / "missing.json"))) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text("{")
    assert main(_lm_eval(folder, task_dir, "--profile", str(tmp_path / "broken.json"))) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model_args", "pretrained=gpt2"], "--model_args is not taken by zerotuning lm-eval: the model is loaded by zerotuning"),
        (["--wandb_args", "project=x"], "--wandb_args is not taken"),
        (["--batch_size", "0"], "expected an integer >= 1, 'auto' or 'auto:N'"),
        (["--num_fewshot", "-1"], "expected an integer >= 0"),
        (["--seed", "1,2"], "expected one integer, or three or four"),
        (["--seed", "-1"], "argument --seed: expected one integer, or three or four comma-separated integers, in [0, 2**32) (None to leave one unset), got '-1'"),
        (["--seed", "0,1,-5,None"], "argument --seed: expected one integer, or three or four"),
        (["--seed", str(2**32)], "argument --seed: expected one integer, or three or four"),
        (["--limit", "inf"], "argument --limit/-L: expected a finite number > 0, got 'inf'"),
        (["--limit", "nan"], "argument --limit/-L: expected a finite number > 0"),
        (["--limit", "0"], "argument --limit/-L: expected a finite number > 0"),
        (["--batch_size", "auto:inf"], "expected an integer >= 1, 'auto' or 'auto:N'"),
        (["--max_batch_size", "-3"], "argument --max_batch_size: expected an integer >= 1"),
        (["--max_length", "0"], "argument --max_length: expected an integer >= 1"),
        (["--no_such_option"], "unrecognized arguments: --no_such_option"),
    ],
)
def test_unknown_and_refused_options_are_named(extra, message, workspace, task_dir, capsys, no_model_load):
    _, folder, _ = workspace
    assert main(_lm_eval(folder, task_dir, "--neutral-profile", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1


def test_a_profile_for_another_model_shape_is_refused(workspace, task_dir, capsys, tmp_path):
    _, folder, _ = workspace
    other = Profile.neutral(tiny_model("llama", num_hidden_layers=3)).save(tmp_path / "three_layers.json")
    assert main(_lm_eval(folder, task_dir, "--profile", str(other))) == 2
    assert "profile is for llama with 3 layers" in capsys.readouterr().err


def test_neutral_and_file_profiles_exclude_each_other(workspace, task_dir, capsys):
    _, folder, profile = workspace
    assert main(_lm_eval(folder, task_dir, "--neutral-profile", "--profile", str(profile))) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seeds"), [("7", [7]), ("1,2,3", [1, 2, 3]), ("0,None,5,9", [0, None, 5, 9])])
def test_one_three_or_four_seeds_are_taken(text, seeds):
    from zerotuning.lm_eval.cli import _seeds

    assert _seeds(text) == seeds
