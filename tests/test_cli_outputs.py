"""The console script's outputs: an earlier run is never overwritten by accident, mixed with a new one or an input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import zerotuning.cli
from zerotuning.cli import main
from zerotuning.tuning import run_record

from scoring_support import save_tiny_model_folder, sentiment_rows, write_jsonl

FAST = ["--batch-size", "16", "--bootstrap-resamples", "100"]
LEVELS_RUN = {"README.md", "predictions.json", "profile.json", "profile_level1.json", "results.json", "metric_vs_gamma.png"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny model, a data file and an earlier `tune --search levels --levels 1` run (it wrote profile_level1.json)."""
    root = tmp_path_factory.mktemp("outputs")
    model = save_tiny_model_folder(root / "tiny-llama")
    data = write_jsonl(sentiment_rows(48, seed=2), root / "reviews.jsonl")
    earlier = root / "earlier"
    assert main(["tune", "--model", str(model), "--task", str(data), "--search", "levels", "--levels", "1", "--gammas", "0.5,2", *FAST, "--out", str(earlier)]) == 0
    assert {path.name for path in earlier.iterdir()} == LEVELS_RUN
    return root, model, data, earlier


@pytest.fixture
def no_model(monkeypatch):
    """Fails the test if the command gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad --out was refused")

    monkeypatch.setattr(zerotuning.cli, "load_model", refuse)


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _tree(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def _one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error, error
    return error


def _tune(model, data, out, *extra) -> list[str]:
    return ["tune", "--model", str(model), "--task", str(data), *FAST, "--budget", "0.5", "--out", str(out), *extra]


def test_tune_into_an_earlier_run_is_refused_before_the_model_loads(workspace, tmp_path, capsys, no_model):
    _, model, data, earlier = workspace
    out = _copy(earlier, tmp_path / "run")
    before = _tree(out)
    assert main(_tune(model, data, out)) == 2
    error = _one_line_error(capsys)
    assert "--out:" in error and str(out) in error and "is not empty" in error and "--overwrite" in error
    assert _tree(out) == before


def test_overwrite_replaces_the_earlier_run_whole(workspace, tmp_path, capsys):
    _, model, data, earlier = workspace
    out = _copy(earlier, tmp_path / "run")
    assert main(_tune(model, data, out, "--overwrite")) == 0
    names = {path.name for path in out.iterdir()}
    # The earlier levels run's profile_level1.json does not survive beside the budgeted run's files.
    assert names == {"README.md", "predictions.json", "profile.json", "profile_budgeted.json", "results.json", "metric_vs_gamma.png"}
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["tuning"]["selected_level"] == "budgeted" and results["files"]["profile"] == str(out / "profile.json")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no staging folder left


def test_overwrite_still_refuses_a_folder_with_other_files(workspace, tmp_path, capsys, no_model):
    _, model, data, earlier = workspace
    out = _copy(earlier, tmp_path / "run")
    (out / "my_notes.txt").write_text("keep me", encoding="utf-8")
    before = _tree(out)
    assert main(_tune(model, data, out, "--overwrite")) == 2
    error = _one_line_error(capsys)
    assert "--out:" in error and "my_notes.txt" in error and "even with --overwrite" in error
    assert _tree(out) == before


@pytest.mark.parametrize("where", ["after the profiles", "between predictions.json and results.json"])
def test_an_interrupted_run_leaves_the_earlier_folder_untouched(workspace, tmp_path, monkeypatch, where):
    _, model, data, earlier = workspace
    out = _copy(earlier, tmp_path / "run")
    before = _tree(out)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "after the profiles":
        monkeypatch.setattr(run_record, "plot_metric_vs_gamma", interrupt)
    else:
        real_write = run_record.write_text_atomically

        def write_then_interrupt(path, text):  # predictions.json is written, results.json is not
            if path.name == "results.json":
                raise KeyboardInterrupt
            return real_write(path, text)

        monkeypatch.setattr(run_record, "write_text_atomically", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        main(_tune(model, data, out, "--overwrite"))
    assert _tree(out) == before and sorted(path.name for path in tmp_path.iterdir()) == ["run"]
    with pytest.raises(KeyboardInterrupt):
        main(_tune(model, data, tmp_path / "fresh"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no half-written new folder either


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("earlier/profile.json", "'{root}/earlier/profile.json' is inside the input --profile"),  # the run folder
        ("earlier", "'{root}/earlier' is the input --profile"),
        ("earlier/evaluation.json", "'{root}/earlier/evaluation.json' is inside the input --profile"),
        ("reviews.jsonl", "'{root}/reviews.jsonl' is the input --task"),  # the task recorded in the profile
        ("tiny-llama/evaluation.json", "is inside the input --model"),  # the model recorded in the profile
    ],
)
def test_evaluate_never_writes_over_or_into_an_input(workspace, capsys, no_model, out, message):
    root, _, _, earlier = workspace
    before = _tree(earlier)
    assert main(["evaluate", "--profile", str(earlier), "--out", str(root / out)]) == 2
    error = _one_line_error(capsys)
    assert error.startswith("zerotuning evaluate: error: --out: ") and message.format(root=root) in error
    assert _tree(earlier) == before


def test_evaluate_with_the_profile_file_as_out_is_refused(workspace, tmp_path, capsys, no_model):
    _, _, _, earlier = workspace
    profile = shutil.copy(earlier / "profile.json", tmp_path / "tuned.json")
    before = Path(profile).read_bytes()
    assert main(["evaluate", "--profile", str(profile), "--out", str(profile)]) == 2
    assert "is the input --profile" in _one_line_error(capsys)
    assert Path(profile).read_bytes() == before


def test_evaluate_out_is_new_unless_overwrite_and_then_replaces_the_whole_set(workspace, tmp_path, capsys, monkeypatch):
    _, _, _, earlier = workspace
    out = tmp_path / "evaluation.json"
    for name in ("evaluation.json", "evaluation_predictions.json", "evaluation_generation_predictions.json"):
        (tmp_path / name).write_text('"an earlier evaluation"', encoding="utf-8")
    with monkeypatch.context() as patch:
        patch.setattr(zerotuning.cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        assert main(["evaluate", "--profile", str(earlier), *FAST, "--out", str(out)]) == 2
    error = _one_line_error(capsys)
    assert "--out:" in error and "already exist" in error and "--overwrite" in error
    assert main(["evaluate", "--profile", str(earlier), *FAST, "--overwrite"]) == 2
    assert "--overwrite applies only with --out" in _one_line_error(capsys)
    assert main(["evaluate", "--profile", str(earlier), *FAST, "--out", str(out), "--overwrite"]) == 0
    # The earlier --also-generation answers do not survive beside an evaluation that has none.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["evaluation.json", "evaluation_predictions.json"]
    assert "test" in json.loads(out.read_text(encoding="utf-8"))


def test_tune_out_holding_or_being_an_input_is_refused(workspace, tmp_path, capsys, no_model):
    _, model, data, _ = workspace
    task = shutil.copy(data, tmp_path / "reviews.jsonl")
    assert main(_tune(model, task, tmp_path, "--overwrite")) == 2
    assert f"--out: '{tmp_path}' holds the input --task" in _one_line_error(capsys)
    assert main(_tune(model, task, task)) == 2
    assert "is the input --task" in _one_line_error(capsys)
    assert main(_tune(model, data, model / "run")) == 2
    assert "is inside the input --model" in _one_line_error(capsys)


def test_tune_out_a_file_is_refused(workspace, tmp_path, capsys, no_model):
    _, model, data, _ = workspace
    (tmp_path / "results").write_text("x", encoding="utf-8")
    assert main(_tune(model, data, tmp_path / "results", "--overwrite")) == 2
    assert "is a file; expected a folder" in _one_line_error(capsys)


def test_probe_heads_into_a_non_empty_folder(workspace, tmp_path, capsys, monkeypatch):
    _, model, data, earlier = workspace
    command = ["probe-heads", "--model", str(model), "--task", str(data), "--batch-size", "16"]
    out = _copy(earlier, tmp_path / "run")  # a tuning run's folder is no probe-heads folder
    with monkeypatch.context() as patch:
        patch.setattr(zerotuning.cli, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
        assert main([*command, "--out", str(out)]) == 2
        assert "is not empty" in _one_line_error(capsys)
        assert main([*command, "--out", str(out), "--overwrite"]) == 2
        assert "even with --overwrite" in _one_line_error(capsys)
    heads = tmp_path / "heads"
    assert main([*command, "--out", str(heads)]) == 0
    first = _tree(heads)
    assert set(first) == {"head_effects.json", "head_effects.png"}
    assert main([*command, "--out", str(heads), "--overwrite"]) == 0
    assert set(_tree(heads)) == set(first)


def test_tune_out_a_link_writes_the_run_where_it_points_and_keeps_the_link(workspace, tmp_path, capsys):
    _, model, data, earlier = workspace
    target = _copy(earlier, tmp_path / "disk" / "run")
    (tmp_path / "runs").symlink_to(target)
    assert main(_tune(model, data, tmp_path / "runs", "--overwrite")) == 0
    assert (tmp_path / "runs").is_symlink() and (tmp_path / "runs").resolve() == target
    assert "profile_budgeted.json" in {path.name for path in target.iterdir()}
    assert sorted(path.name for path in target.parent.iterdir()) == ["run"]  # no staging folder left


def test_tune_out_a_link_loop_is_refused_before_the_model_loads(workspace, tmp_path, capsys, no_model):
    _, model, data, _ = workspace
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert main(_tune(model, data, tmp_path / "a")) == 2
    assert "--out:" in (error := _one_line_error(capsys)) and "cannot be followed" in error
