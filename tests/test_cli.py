"""The console script end to end on a tiny local model folder and a tiny local JSONL file."""

from __future__ import annotations

import argparse
import json

import pytest

from zerotuning.cli import build_parser, main
from zerotuning.evaluation.report import format_interval
from zerotuning.profile import Profile

from scoring_support import save_tiny_model_folder, sentiment_rows, write_jsonl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_every_option_of_every_command_is_explained(capsys):
    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    assert set(commands.choices) == {"tune", "evaluate", "probe-heads", "export", "lm-eval", "lm-eval-task", "compare"}
    for name, subparser in commands.choices.items():
        for action in subparser._actions:
            assert action.help and len(action.help) > 10, (name, action.dest)
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        # compare reads two finished runs; export writes a model folder
        assert "--task" in capsys.readouterr().out or name in ("compare", "export")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model_folder = save_tiny_model_folder(root / "tiny-llama")
    data = write_jsonl(sentiment_rows(64, seed=4), root / "reviews.jsonl")
    return root, model_folder, data


def test_tune_then_evaluate_end_to_end(workspace, capsys, monkeypatch):
    root, model_folder, data = workspace
    out = root / "run"
    monkeypatch.chdir(root)
    code = main([
        "tune", "--model", model_folder.name, "--task", data.name, "--shots", "1", "--seed", "3",
        "--search", "levels", "--levels", "0,1,2", "--fixed-gamma", "2", "--gammas", "0.5,2", "--probe-gamma", "2",
        "--batch-size", "16", "--bootstrap-resamples", "300", "--out", str(out),
    ])
    printed = capsys.readouterr().out
    assert code == 0
    assert "selected level" in printed and "tuned vs baseline" in printed
    for name in ("profile.json", "README.md", "profile_level0.json", "profile_level1.json", "profile_level2.json", "results.json", "predictions.json"):
        assert (out / name).is_file(), name
    for name in ("metric_vs_gamma.png", "head_effects.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name

    results = json.loads((out / "results.json").read_text())
    test = results["test"]
    for method in ("baseline", "tuned"):
        accuracy = test["methods"][method]["accuracy"]
        assert accuracy["low"] <= accuracy["estimate"] <= accuracy["high"] and accuracy["level"] == 0.95
        assert 0 <= test["methods"][method]["invalid_rate"] <= 1
    assert {"baseline+temperature", "baseline+label_bias"} <= set(test["methods"])
    assert 0 < test["comparisons"]["tuned vs baseline"]["mcnemar"]["p_value"] <= 1
    assert results["splits"] == {"calibration": 29, "test": 29}  # 64 rows: 6 demo, 29, 29 (seeded random split)
    assert results["task"]["split_sizes"]["demo"] == 6 and len(results["task"]["demonstration_ids"]) == 1
    assert results["settings"]["seeds"] == {"splits": 3, "demonstrations": 3, "bootstrap": 3}
    assert results["model"]["load"]["source"]["kind"] == "directory" and results["model"]["class"] == "LlamaForCausalLM"
    assert results["selected"]["level"] == results["tuning"]["selected_level"]
    assert set(results["tuning"]["levels"]) == {"0", "1", "2"}
    assert set(results["test_per_level"]) == {"0", "1", "2"}
    stages = results["cost"]["stages"]
    assert stages["level1"]["cache_hits"] >= 1  # level 0's gamma 2 is not scored again
    assert stages["level2.profiling"]["forward_passes"] == 4 * 2  # 4 heads, 29 examples in 2 batches of <= 16
    outermost = [name for name in stages if "." not in name or name.startswith(("baseline.", "test."))]
    assert results["cost"]["total"]["forward_passes"] == sum(stages[name]["forward_passes"] for name in outermost)
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(predictions) == 29
    tuned_accuracy = sum(row["tuned"] == row["answer"] for row in predictions) / 29
    assert tuned_accuracy == pytest.approx(test["methods"]["tuned"]["accuracy"]["estimate"])

    # The run folder is a profile folder: its card shows the held-out results that results.json has.
    held_out = Profile.from_pretrained(out).metadata["zerotuning"]["held_out"]
    assert held_out["accuracy"]["tuned"] == test["methods"]["tuned"]["accuracy"]
    assert held_out["comparisons"]["tuned vs baseline"]["mcnemar_p"] == test["comparisons"]["tuned vs baseline"]["mcnemar"]["p_value"]
    assert format_interval(test["methods"]["tuned"]["accuracy"]) in (out / "README.md").read_text(encoding="utf-8")

    monkeypatch.chdir(root.parent)  # the profile records absolute paths of the model and the data file
    code = main(["evaluate", "--profile", str(out), "--bootstrap-resamples", "300", "--out", str(root / "evaluation.json")])
    printed = capsys.readouterr().out
    assert code == 0 and "tuned vs baseline" in printed
    evaluation = json.loads((root / "evaluation.json").read_text())
    for method in ("baseline", "tuned", "baseline+label_bias"):
        assert evaluation["test"]["methods"][method]["accuracy"] == test["methods"][method]["accuracy"], method
    assert json.loads((root / "evaluation_predictions.json").read_text()) == predictions


def test_budgeted_default_stays_within_its_budget_and_reports_the_optimism(workspace, capsys, monkeypatch):
    root, model_folder, data = workspace
    out = root / "budgeted"
    monkeypatch.chdir(root)
    code = main(["tune", "--model", model_folder.name, "--task", data.name, "--seed", "3", "--batch-size", "16",
                 "--bootstrap-resamples", "300", "--budget", "0.5", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0 and "selected budgeted" in printed and "optimism" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["tuning"]["selected_level"] == "budgeted" and (out / "profile_budgeted.json").is_file()
    assert (out / "metric_vs_gamma.png").read_bytes()[:8] == PNG_MAGIC
    cost = results["cost"]["tuning"]
    # 4 heads per layer: the published protocol is 1 + 4 + 7 = 12 passes; half of it, baseline included.
    assert cost["published_protocol_passes"] == 12 and cost["example_equivalent_passes"] <= 6.0
    assert cost["examples_scored"] == results["cost"]["stages"]["baseline.calibration"]["examples_scored"] + results["cost"]["stages"]["budgeted"]["examples_scored"]
    search = results["tuning"]["levels"]["budgeted"]["search"]
    assert search["plan"]["cost_examples"] == results["cost"]["stages"]["budgeted"]["examples_scored"]
    assert search["rungs"][-1]["examples"] == 29
    selection = results["selection"]
    assert selection["method"] == "tuned+label_bias" and selection["reference"] == "baseline+label_bias"
    assert selection["optimism"] == pytest.approx(selection["calibration_gain"] - selection["test_gain"])
    methods = results["test"]["methods"]
    assert selection["test_gain"] == pytest.approx(methods["tuned+label_bias"]["accuracy"]["estimate"] - methods["baseline+label_bias"]["accuracy"]["estimate"])
    assert "tuned+label_bias vs baseline" in results["test"]["comparisons"]
    assert results["settings"]["answer_forms"] == "auto" and results["task"]["answer_scoring"]["mode"] == "surface"
    assert results["settings"]["objective"]["calibration"] == "label_bias"


def test_probe_heads_per_layer_and_head(workspace, capsys):
    root, model_folder, data = workspace
    out = root / "heads"
    code = main(["probe-heads", "--model", str(model_folder), "--task", str(data), "--granularity", "layer_head", "--batch-size", "16", "--out", str(out)])
    assert code == 0 and "dominant" in capsys.readouterr().out
    effects = json.loads((out / "head_effects.json").read_text())
    assert len(effects["head_profile"]["effects"]) == 2 * 4
    assert sum(effects["head_profile"]["counts"].values()) == 8
    assert effects["cost"]["stages"]["profiling"]["forward_passes"] == 8 * 2
    assert (out / "head_effects.png").read_bytes()[:8] == PNG_MAGIC


def test_gradient_probes_cost_one_forward_and_backward_per_batch(workspace, capsys):
    root, model_folder, data = workspace
    out = root / "gradient-heads"
    code = main(["probe-heads", "--model", str(model_folder), "--task", str(data), "--granularity", "layer_head", "--probes", "gradient", "--batch-size", "16", "--out", str(out)])
    assert code == 0 and "dominant" in capsys.readouterr().out
    effects = json.loads((out / "head_effects.json").read_text())
    assert effects["settings"]["tuning"]["probes"] == "gradient"
    assert len(effects["head_profile"]["effects"]) == 2 * 4 and all("gradient" in effect["metrics"] for effect in effects["head_profile"]["effects"])
    profiling = effects["cost"]["stages"]["profiling"]
    assert (profiling["forward_passes"], profiling["backward_passes"]) == (2, 2)  # 29 examples in 2 batches, whatever the granularity

    tuned = root / "gradient-run"
    code = main([
        "tune", "--model", str(model_folder), "--task", str(data), "--search", "levels", "--levels", "2", "--probes", "gradient",
        "--gammas", "0.5,2", "--batch-size", "16", "--bootstrap-resamples", "100", "--out", str(tuned),
    ])
    assert code == 0
    results = json.loads((tuned / "results.json").read_text())
    stages = results["cost"]["stages"]
    assert (stages["level2.profiling"]["forward_passes"], stages["level2.profiling"]["backward_passes"]) == (2, 2)
    assert results["tuning"]["levels"]["2"]["head_profile"]["granularity"] == "head"
    assert main(["tune", "--model", str(model_folder), "--task", str(data), "--probes", "gradient", "--out", str(root / "refused")]) != 0
    assert "--probes: only used with --search levels" in capsys.readouterr().err


def test_level3_fits_saves_plots_and_round_trips_its_profile(workspace, capsys):
    root, model_folder, data = workspace
    out = root / "level3-run"
    code = main([
        "tune", "--model", str(model_folder), "--task", str(data), "--search", "levels", "--levels", "0,3", "--layers", "1",
        "--fit-steps", "4", "--fit-learning-rate", "0.3", "--fit-prior", "0.01", "--batch-size", "16", "--bootstrap-resamples", "100",
        "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tuning"]["levels"] == [0, 3] and results["settings"]["tuning"]["fit_steps"] == 4
    fit = results["tuning"]["levels"]["3"]["fit"]
    assert fit["steps"] == 4 and 1 <= fit["steps_run"] <= 4 and 0 <= fit["best_step"] <= fit["steps_run"]
    assert fit["fit_examples"] + fit["held_out_examples"] == results["splits"]["calibration"] and fit["layers"] == [1]
    assert len(fit["held_out_losses"]) == fit["steps_run"] + 1 and fit["peak_rss_mib"] > 0
    stages = results["cost"]["stages"]
    # 29 calibration examples: 22 to fit (2 batches of <= 16) and 7 held out (1 batch); each step a backward per fit batch
    assert stages["level3.fit"]["backward_passes"] == 2 * fit["steps_run"]
    assert stages["level3.fit"]["forward_passes"] == 2 * fit["steps_run"] + fit["steps_run"] + 1
    assert "level3" in results["cost"]["tuning"]["stages"]
    assert (out / "fitted_gammas.png").read_bytes()[:8] == PNG_MAGIC
    saved = Profile.load(out / "profile_level3.json")
    assert saved.metadata["zerotuning"]["level"] == 3 and saved.gammas[0] == [1.0] * 4
    if fit["best_step"]:
        assert len({gamma for gamma in saved.gammas[1]}) > 1  # one gamma per head
    code = main(["evaluate", "--profile", str(out / "profile_level3.json"), "--bootstrap-resamples", "100", "--out", str(root / "level3-eval.json")])
    assert code == 0
    evaluation = json.loads((root / "level3-eval.json").read_text())
    assert evaluation["test"]["methods"]["tuned"]["accuracy"]["estimate"] == results["test_per_level"]["3"]["accuracy"]
    calibrated = results["test_per_level"]["3"]["label_bias"]
    assert calibrated["accuracy"] == evaluation["test"]["methods"]["tuned+label_bias"]["accuracy"]
    assert calibrated["vs_baseline_label_bias"]["mcnemar"] == evaluation["test"]["comparisons"]["tuned+label_bias vs baseline+label_bias"]["mcnemar"]
    assert evaluation["calibration"]["tuned"]["mean_answer_log_likelihood"] == pytest.approx(results["tuning"]["levels"]["3"]["calibration"]["mean_answer_log_likelihood"])


def test_level3_options_are_checked_before_the_model_loads(workspace, capsys):
    root, _, data = workspace
    missing_model = str(root / "no-such-model")  # loading it would fail: every refusal below comes first
    base = ["tune", "--model", missing_model, "--task", str(data), "--out", str(root / "refused")]
    cases = [
        (["--search", "levels", "--levels", "0,1", "--fit-steps", "3"], "--fit-steps: only used with level 3, but --levels is 0,1"),
        (["--search", "levels", "--fit-prior", "1"], "--fit-prior: only used with level 3, but --levels is 0,1,2"),
        (["--fit-learning-rate", "0.1"], "--fit-learning-rate: only used with --search levels"),
        (["--search", "levels", "--levels", "3", "--fit-steps", "0"], "--fit-steps"),
        (["--search", "levels", "--levels", "3", "--fit-prior", "-1"], "--fit-prior"),
        (["--search", "levels", "--levels", "3", "--fit-prior", "nan"], "--fit-prior"),
        (["--search", "levels", "--levels", "3", "--fit-learning-rate", "inf"], "--fit-learning-rate"),
        (["--search", "levels", "--levels", "3,4"], "--levels"),
        (["--search", "levels", "--levels", "3", "--answer-forms", "full_sequence"], "level 3 (--levels): needs answer-position scoring"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    code = main(["tune", "--model", missing_model, "--task", "short_answers", "--search", "levels", "--levels", "3", "--out", str(root / "refused")])
    assert code == 2 and "a generation task has none" in capsys.readouterr().err


def test_bad_input_exits_with_a_message_not_a_traceback(workspace, capsys):
    root, model_folder, _ = workspace
    code = main(["tune", "--model", str(model_folder), "--task", str(root / "missing.jsonl"), "--out", str(root / "x")])
    assert code == 2
    assert "missing.jsonl" in capsys.readouterr().err
    code = main(["tune", "--model", str(model_folder), "--task", str(root / "reviews.jsonl"), "--search", "levels", "--gammas", "0,2", "--out", str(root / "x")])
    assert code == 2 and "--gammas" in capsys.readouterr().err
    code = main(["tune", "--model", str(model_folder), "--task", str(root / "reviews.jsonl"), "--gammas", "0.5,2", "--out", str(root / "x")])
    assert code == 2 and "--gammas: only used with --search levels" in capsys.readouterr().err
    code = main(["tune", "--model", str(model_folder), "--task", str(root / "reviews.jsonl"), "--search", "levels", "--budget", "0.5", "--out", str(root / "x")])
    assert code == 2 and "--budget: only used with --search budgeted" in capsys.readouterr().err
    code = main(["tune", "--model", str(model_folder), "--task", str(root / "reviews.jsonl"), "--budget", "0.05", "--out", str(root / "x")])
    assert code == 2 and "raise --budget" in capsys.readouterr().err


def test_a_budget_or_folds_the_search_cannot_meet_is_refused_before_any_scoring(workspace, capsys, monkeypatch):
    root, model_folder, data = workspace
    from zerotuning.tuning import experiment

    def no_scoring(self, split):
        raise AssertionError("scored before the search plan was checked")

    monkeypatch.setattr(experiment.Session, "baseline", no_scoring)
    code = main(["tune", "--model", str(model_folder), "--task", str(data), "--budget", "0.05", "--out", str(root / "x")])
    assert code == 2 and "raise --budget" in capsys.readouterr().err
    assert not (root / "x").exists()
