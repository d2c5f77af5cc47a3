"""`zerotuning tune` / `evaluate` on a generation task, both objectives, and `evaluate --also-generation`."""

from __future__ import annotations

import json

import pytest
from generation_support import arithmetic_rows, save_generation_model_folder

from scoring_support import sentiment_rows, write_jsonl
from zerotuning.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMON = ["--batch-size", "16", "--bootstrap-resamples", "200", "--max-new-tokens", "4"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("gencli")
    model = save_generation_model_folder(root / "tiny-chat")
    generation = write_jsonl(arithmetic_rows(40), root / "sums.jsonl")
    classification = write_jsonl(sentiment_rows(40, seed=1), root / "reviews.jsonl")
    return root, model, generation, classification


@pytest.mark.parametrize(("objective", "levels", "metric"), [("supervised", "0,1,2", "mean_reference_log_likelihood"), ("unsupervised", "0,1", "mean_continuation_entropy")])
def test_tune_a_generation_task_then_evaluate_its_profile(workspace, capsys, objective, levels, metric):
    root, model, data, _ = workspace
    out = root / f"run-{objective}"
    code = main(["tune", "--model", str(model), "--task", str(data), "--objective", objective, "--search", "levels", "--levels", levels,
                 "--gammas", "0.5,2", "--out", str(out), *COMMON])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "selected level" in printed and "exact_match" in printed and "degenerate" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["task"]["prompt_format"]["name"] == "chat" and results["task"]["spec"]["kind"] == "generation"
    assert results["settings"]["objective"]["key"][0].endswith(metric)
    assert results["settings"]["generation"]["max_new_tokens"] == 4
    candidates = results["tuning"]["levels"]["1"]["candidates"]
    assert [c["gamma"] for c in candidates] == [0.5, 1.0, 2.0] and all(metric in c["metrics"] for c in candidates)
    # Calibration candidates cost only what the objective needs: no generation for the likelihood objective.
    assert ("exact_match" in candidates[0]["metrics"]) == (objective == "unsupervised")
    test = results["test"]
    for measure in ("reference_log_likelihood", "exact_match", "contains", "regex_match", "degenerate", "unfinished", "continuation_entropy"):
        for method in ("baseline", "tuned"):
            interval = test["methods"][method][measure]
            assert interval["low"] <= interval["estimate"] <= interval["high"], (measure, method)
        assert "difference" in test["tuned_vs_baseline"][measure]
    assert test["tuned_vs_baseline"]["exact_match"]["mcnemar"]["p_value"] <= 1
    assert (out / "metric_vs_gamma.png").read_bytes()[:8] == PNG_MAGIC
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == results["splits"]["test"] and {"references", "baseline", "tuned"} <= set(predictions[0])
    card = (out / "README.md").read_text()
    assert "| generation measure |" in card and "| exact_match |" in card
    profile = json.loads((out / "profile.json").read_text())
    assert profile["metadata"]["zerotuning"]["settings"]["generation"]["chat_template"] == "auto"

    code = main(["evaluate", "--profile", str(out / "profile.json"), "--batch-size", "16", "--bootstrap-resamples", "200", "--out", str(out / "evaluation.json")])
    assert code == 0, capsys.readouterr().err
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["settings"]["generation"]["max_new_tokens"] == 4  # the recorded budget
    assert evaluation["test"]["methods"] == test["methods"]  # the same splits, prompts, budget and profile
    assert json.loads((out / "evaluation_predictions.json").read_text()) == predictions


def test_evaluate_a_classification_profile_with_also_generation(workspace, capsys):
    root, model, generation, classification = workspace
    out = root / "cls"
    assert main(["tune", "--model", str(model), "--task", str(classification), "--search", "levels", "--levels", "0", "--batch-size", "16",
                 "--bootstrap-resamples", "200", "--out", str(out)]) == 0
    capsys.readouterr()
    code = main(["evaluate", "--profile", str(out / "profile.json"), "--also-generation", str(generation), "--max-generation-test", "7",
                 "--max-new-tokens", "3", "--bootstrap-resamples", "200", "--out", str(out / "evaluation.json")])
    printed = capsys.readouterr().out
    assert code == 0
    assert "tuned vs baseline" in printed and "collateral: generation task 'sums'" in printed
    evaluation = json.loads((out / "evaluation.json").read_text())
    collateral = evaluation["also_generation"]
    assert collateral["test"]["examples"] == 7 and collateral["settings"]["generation"]["max_new_tokens"] == 3
    assert collateral["settings"]["shots"] == 0
    assert "exact_match" in collateral["test"]["tuned_vs_baseline"]
    assert "accuracy" in evaluation["test"]["methods"]["tuned"]  # the classification evaluation is still there
    predictions = json.loads((out / "evaluation_predictions.json").read_text())
    assert len(predictions) == evaluation["splits"]["test"]
    assert len(json.loads((out / "evaluation_generation_predictions.json").read_text())) == 7


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--task", "CLS", "--max-new-tokens", "4"], "--max-new-tokens applies only to generation tasks"),
        (["--task", "GEN", "--search", "levels", "--objective", "unsupervised", "--entropy-over", "vocab"], "--entropy-over applies to answer-token tasks only"),
        (["--task", "GEN", "--search", "levels", "--max-new-tokens", "0"], "--max-new-tokens: got 0"),
        (["--task", "GEN", "--search", "levels", "--chat-template", "on", "--shots", "500"], "demo split has"),
        (["--task", "GEN"], "a generation task is tuned with --search levels only"),
        (["--task", "GEN", "--search", "levels", "--objective-calibration", "none"], "--objective-calibration applies to answer-token tasks only"),
        (["--task", "GEN", "--search", "levels", "--answer-forms", "first_token"], "--answer-forms applies to answer-token tasks only"),
    ],
)
def test_generation_options_are_refused_where_they_do_not_apply(workspace, capsys, extra, message):
    root, model, generation, classification = workspace
    extra = [str(generation) if item == "GEN" else str(classification) if item == "CLS" else item for item in extra]
    code = main(["tune", "--model", str(model), *extra, "--out", str(root / "refused")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (root / "refused" / "results.json").exists()


def test_also_generation_errors(workspace, capsys):
    root, model, generation, classification = workspace
    out = root / "cls-errors"
    assert main(["tune", "--model", str(model), "--task", str(classification), "--search", "levels", "--levels", "0", "--bootstrap-resamples", "100", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--profile", str(out / "profile.json"), "--also-generation", str(classification)]) == 2
    error = capsys.readouterr().err
    assert "--also-generation:" in error and "reviews.jsonl" in error and "'prompt'" in error  # sentiment rows are no generation rows
    assert main(["evaluate", "--profile", str(out / "profile.json"), "--max-generation-test", "3"]) == 2
    assert "--max-generation-test applies only with --also-generation" in capsys.readouterr().err
