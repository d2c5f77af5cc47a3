"""``zerotuning tune --engine vllm``: the vLLM scorer against the transformers one, and a small tune end to end.

The default model (smollm2, loaded from its GGUF as the CLI loads it) on the built-in sentiment
task, with small calibration and test subsets so that the engine's start dominates the time.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from zerotuning.cli import main
from zerotuning.models import load_model
from zerotuning.profile import Profile
from zerotuning.tasks.loader import TaskRequest, load_task
from zerotuning.tasks.splits import SplitPlan
from zerotuning.tuning.experiment import RunSettings, Session
from zerotuning.vllm.scoring_engine import VllmOptions

EXAMPLES = 16
TUNE_OPTIONS = ["--model", "smollm2", "--task", "sentiment", "--max-calibration", "24", "--max-test", "16",
                "--search", "levels", "--levels", "0,1", "--gammas", "0.5,1.5,3", "--bootstrap-resamples", "200"]


def tuned_profile(model) -> Profile:
    """Gamma 2.5 on every head of layers 0-14, 0.5 on the even heads of layers 15-29."""
    neutral = Profile.neutral(model)
    rows = [[2.5] * len(row) if layer < 15 else [0.5 if head % 2 == 0 else 1.0 for head in range(len(row))] for layer, row in enumerate(neutral.gammas)]
    return Profile(neutral.identity, rows)


@pytest.fixture(scope="module")
def loaded():
    return load_model("smollm2")


def sessions_scores(loaded, exported_model, profiles):
    model, tokenizer = loaded
    task = load_task(TaskRequest("sentiment", splits=SplitPlan(max_examples={"calibration": EXAMPLES, "test": EXAMPLES})))
    reference = Session(model, tokenizer, task, RunSettings())
    try:
        expected = [reference.score["calibration"](profile, "transformers") for profile in profiles]
    finally:
        reference.close()
    served = Session(model, tokenizer, task, RunSettings(batch_size=None), VllmOptions(model_folder=exported_model))
    try:
        got = [served.score["calibration"](profile, "vllm") for profile in profiles]
        settings = served.engine_settings
    finally:
        served.close()
    return expected, got, settings


def test_the_vllm_scorer_gives_the_transformers_scorers_answer_log_probabilities(loaded, exported_model):
    profiles = [Profile.neutral(loaded[0]), tuned_profile(loaded[0])]
    expected, got, settings = sessions_scores(loaded, exported_model, profiles)
    assert settings["engine"] == "vllm" and settings["dtype"] == "float32" and settings["tensor_parallel_size"] == 1
    assert not np.allclose(expected[0].vocab_log_probs(), expected[1].vocab_log_probs(), atol=1e-2), "the tuned profile changed nothing"
    for reference, served in zip(expected, got):
        assert served.example_ids == reference.example_ids
        worst = np.abs(served.vocab_log_probs() - reference.vocab_log_probs()).max()
        assert worst < 1e-3, f"answer log-probabilities differ from transformers by {worst:.2e}"
        assert np.abs(served.vocab_entropy - reference.vocab_entropy).max() < 1e-3
        np.testing.assert_array_equal(served.greedy_tokens, reference.greedy_tokens)
        np.testing.assert_array_equal(served.greedy_answers, reference.greedy_answers)
        assert served.summary()["accuracy"] == reference.summary()["accuracy"]


def test_tune_with_the_vllm_engine_selects_what_the_transformers_engine_selects(exported_model, tmp_path):
    assert main(["tune", *TUNE_OPTIONS, "--out", str(tmp_path / "transformers")]) == 0
    assert main(["tune", *TUNE_OPTIONS, "--engine", "vllm", "--vllm-model", str(exported_model), "--out", str(tmp_path / "vllm")]) == 0
    runs = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("transformers", "vllm")}
    assert runs["transformers"]["engine"] == {"engine": "transformers"}
    assert runs["vllm"]["engine"]["engine"] == "vllm" and runs["vllm"]["settings"]["batch_size"] is None
    assert runs["vllm"]["selected"] == runs["transformers"]["selected"]
    for level in ("0", "1"):
        assert runs["vllm"]["tuning"]["levels"][level]["gamma"] == runs["transformers"]["tuning"]["levels"][level]["gamma"]
    assert runs["vllm"]["test"]["methods"]["tuned"]["accuracy"] == runs["transformers"]["test"]["methods"]["tuned"]["accuracy"]
    predictions = [json.loads((tmp_path / name / "predictions.json").read_text()) for name in ("transformers", "vllm")]
    assert predictions[1] == predictions[0]


def test_an_export_of_another_model_is_refused(loaded, tmp_path):
    from zerotuning.vllm.scoring_engine import check_export_matches

    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "zerotuning_export.json").write_text(json.dumps({"identity": {"model_type": "llama", "num_layers": 2}, "load_record": {}}))
    with pytest.raises(ValueError, match="is an export of another model: its identity"):
        check_export_matches(folder, loaded[0])


REFUSED = [
    (["--task", "short_answers", "--search", "levels"], "the task is a generation task"),
    (["--task", "sentiment", "--search", "levels", "--levels", "0,3"], "level 3 and --probes gradient need backward passes"),
    (["--task", "sentiment", "--search", "levels", "--probes", "gradient"], "level 3 and --probes gradient need backward passes"),
    (["--task", "sentiment", "--answer-forms", "full_sequence"], "--answer-forms full_sequence is not supported"),
    (["--task", "sentiment", "--batch-size", "4"], "--batch-size 4 would be ignored"),
    (["--task", "sentiment", "--vllm-model", "/nonexistent/export"], "--vllm-model: '/nonexistent/export' has no config.json"),
]


@pytest.mark.parametrize("options, expected", REFUSED, ids=["generation", "level3", "gradient", "full_sequence", "batch_size", "vllm_model"])
def test_what_vllm_cannot_score_is_refused_before_the_model_loads(options, expected, tmp_path, capsys, monkeypatch):
    import zerotuning.cli

    monkeypatch.setattr(zerotuning.cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the options were checked"))
    assert main(["tune", "--model", "smollm2", *options, "--engine", "vllm", "--out", str(tmp_path / "never")]) == 2
    assert expected in capsys.readouterr().err


def test_evaluate_with_the_vllm_engine_gives_the_transformers_engines_evaluation(loaded, exported_model, tmp_path):
    profile = tuned_profile(loaded[0]).save(tmp_path / "profile.json")
    options = ["evaluate", "--profile", str(profile), "--model", "smollm2", "--task", "sentiment", "--shots", "0", "--seed", "0", "--max-calibration", "16",
               "--max-test", "16", "--bootstrap-resamples", "200"]
    assert main([*options, "--out", str(tmp_path / "transformers.json")]) == 0
    assert main([*options, "--engine", "vllm", "--vllm-model", str(exported_model), "--out", str(tmp_path / "vllm.json")]) == 0
    runs = {name: json.loads((tmp_path / f"{name}.json").read_text()) for name in ("transformers", "vllm")}
    assert runs["transformers"]["engine"] == {"engine": "transformers"} and runs["vllm"]["engine"]["engine"] == "vllm"
    for method in ("baseline", "tuned", "tuned+label_bias"):
        assert runs["vllm"]["test"]["methods"][method]["accuracy"] == runs["transformers"]["test"]["methods"][method]["accuracy"]
    predictions = [json.loads((tmp_path / f"{name}_predictions.json").read_text()) for name in ("transformers", "vllm")]
    assert predictions[1] == predictions[0]


def test_evaluate_refuses_what_the_vllm_engine_cannot_score_before_the_model_loads(loaded, tmp_path, capsys, monkeypatch):
    import zerotuning.cli

    profile = tuned_profile(loaded[0]).save(tmp_path / "profile.json")
    monkeypatch.setattr(zerotuning.cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the options were checked"))
    base = ["evaluate", "--profile", str(profile), "--model", "smollm2", "--task", "sentiment", "--shots", "0", "--seed", "0", "--engine", "vllm"]
    assert main([*base, "--also-generation", "short_answers"]) == 2
    assert "--also-generation: generation tasks are scored with --engine transformers only" in capsys.readouterr().err
    assert main([*base, "--batch-size", "4"]) == 2
    assert "--batch-size 4 would be ignored" in capsys.readouterr().err
